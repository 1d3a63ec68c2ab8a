"""Writing run files safely: atomic replacement in the destination folder, and run-folder locks.

Standard library only, so that the command lines can use it before importing torch.

An atomic write goes to a temporary file beside its destination (the same folder, hence
the same filesystem), is flushed and fsynced, then renamed over the destination: a reader
sees the old file or the new one, never a part. A rename across filesystems would be a
copy, which a kill can leave half done; that is why the temporary file is never put in
``TMPDIR``. A kill during the write leaves at most a hidden ``.<name>.<pid>.tmp`` beside
the destination, which :func:`remove_stale_temporaries` clears at the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, NoReturn

from zoo.errors import ConfigError

_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")



def config_dir() -> str:
    """The Hydra config folder: inside the installed package, else the repository's."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "configs"
    return str(packaged if packaged.is_dir() else here.parents[2] / "configs")

def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` when the ``with`` block ends without an error.

    On an error ``path`` is as it was and the temporary file is gone; an ``OSError`` of the
    write (``ENOSPC``, ``EFBIG``) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    file = None
    try:
        with open(temporary, "wb") as raw:
            file = _WriteErrors(raw)
            yield file  # type: ignore[misc]
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        # A full disk or a file-size limit is met by a write that names no file, and some
        # writers (torch.save's zip writer) report it as a RuntimeError: name ours, once.
        failed = err if isinstance(err, OSError) else getattr(file, "error", None)
        if failed is not None and failed.errno is not None and failed.filename in (None, str(temporary)):
            raise OSError(failed.errno, failed.strerror, str(path)) from err
        raise
    _fsync_folder(path.parent)


def append_whole(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` whole or not at all: a write that fails (a full disk, a
    file-size limit) is cut back to the old end, and the error names ``path``."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        os.close(fd)


class _WriteErrors:
    """A binary file that remembers the first ``OSError`` of its writes (a caller may swallow it)."""

    def __init__(self, file: IO[bytes]):
        self._file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one atomic step."""
    with atomic_writer(path) as file:
        file.write(data.encode() if isinstance(data, str) else data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; returns them."""
    removed = []
    for entry in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


class RunLock:
    """``<run folder>/.lock``: an OS lock (``flock``) on the file, held while a run writes the folder.

    ``flock`` is released by the kernel when its process dies, however it dies, so a killed
    run never holds a folder. The file also names its owner (host, pid, the process's start
    time and the machine's boot), one JSON line, for two reasons: the refusal can say who
    holds the folder, and on file systems where ``flock`` is not shared between clients
    (some NFS and Lustre mounts, where SLURM users run) a lock that ``flock`` grants but
    that names a live process of this machine still refuses. A pid is only taken for the
    owner when its start time and boot match too: after a container restart a pid, our
    own included, is reused by an unrelated process. A lock naming another host is judged
    by ``flock`` alone (that host's processes cannot be asked).
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(read_owner(self.path))
            # The file may have been released and removed between our open and our flock:
            # then we locked a file nobody else will see; take the one at the path instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = read_owner(self.path)
            if owner is not None and owner_alive(owner):  # flock is not shared on this file system
                os.close(fd)
                self._refuse(owner)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(this_process()) + "\n").encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise ConfigError(f"could not lock run folder {self.path.parent}; another run keeps taking it")

    def _refuse(self, owner: dict | None) -> NoReturn:
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
        raise ConfigError(
            f"run folder {self.path.parent} is in use by another run ({who}); "
            f"wait for it or give this run another folder (hydra.run.dir=...)"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                self.path.unlink()  # before the unlock: nobody can lock this file after us
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``); ``None`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name in (...) may hold spaces
    except (ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def this_process() -> dict:
    """What a lock file records of its owner."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "boot": _boot_id()}


def read_owner(path: Path) -> dict | None:
    """The owner a lock file names; ``None`` for an empty or unreadable one (a writer killed
    mid-write, or a lock of an older version of zoo that named only a pid)."""
    try:
        owner = json.loads(path.read_text()[:4096])
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def owner_alive(owner: dict) -> bool:
    """Whether ``owner`` is a live process of this machine: same host and boot, and its pid
    alive with the start time recorded (so a reused pid, ours included, is not the owner)."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if owner.get("boot") != _boot_id():
        return False  # the machine (or container) restarted: every process of the owner's is gone
    start = _start_time(pid)
    return start is not None and start == owner.get("start")


_held: dict[Path, RunLock] = {}  # the folders this process claimed


def run_in(folder: str | Path) -> str | None:
    """``"finished"`` or ``"interrupted"`` (metrics.json says), ``"started"`` (config.yaml, written
    just before the first step, or a checkpoint) or ``None``. Hydra's ``.hydra/`` and
    ``train.log`` alone are not a run: a command refused before training may leave them."""
    folder = Path(folder)
    if (folder / "metrics.json").exists():
        try:
            status = json.loads((folder / "metrics.json").read_text()[:1_000_000]).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        return "interrupted" if status == "interrupted" else "finished"
    checkpoints = folder / "checkpoints"
    if (folder / "config.yaml").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir())):
        return "started"
    return None


def _aside(folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1, 1000):
        target = folder.with_name(f"{folder.name}.replaced-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not target.exists():
            return target
    raise ConfigError(f"too many replaced runs beside {folder}")


def sweep_in(folder: str | Path) -> str | None:
    """``"started"`` when a job folder of the sweep ``folder`` holds a run, else ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return "started" if any(job.is_dir() and run_in(job) for job in folder.iterdir()) else None


def claim_sweep_folder(folder: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path | None:
    """:func:`claim_run_folder` for a sweep's folder, which holds a run when any of its jobs does."""
    return claim_run_folder(folder, resume=resume, overwrite=overwrite, what="sweep", state=sweep_in)


def claim_run_folder(
    folder: str | Path, *, resume: bool = False, overwrite: bool = False, what: str = "run", state=run_in
) -> Path | None:
    """Lock ``folder`` for this process's run, before anything is written into it.

    A folder holding a started or finished run is refused unless ``resume`` (continue it)
    or ``overwrite`` (move it aside to ``<folder>.replaced-<date>_<time>`` and start anew;
    nothing is deleted). Returns where the old run went, if it was moved. Claiming a folder
    this process holds already is a no-op; :func:`release_run_folder` lets it go.
    """
    folder = Path(os.path.abspath(folder))
    if folder in _held:
        return None
    if resume and overwrite:
        raise ConfigError("resume=true continues the run in the folder and overwrite=true replaces it: give one")
    new = next((f for f in reversed([folder, *folder.parents]) if not f.exists()), None)  # the first folder we create
    before = set(os.listdir(folder)) if new is None and folder.is_dir() else set()
    lock = RunLock(folder).acquire()
    moved = None
    try:
        held = state(folder)
        if held and not resume:
            if not overwrite:
                raise ConfigError(
                    f"{what} folder {folder} holds {'an' if held[0] in 'aeiou' else 'a'} {held} {what}; resume=true continues it, overwrite=true "
                    f"moves it aside and starts anew, or give this run another folder"
                )
            moved = _aside(folder)
            os.rename(folder, moved)  # our lock file goes with it, still locked
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                (moved / ".lock").unlink()
            lock = RunLock(folder).acquire()
            logging.getLogger("zoo").warning("overwrite=true: the %s run in %s was moved to %s", held, folder, moved)
    except BaseException:
        lock.release()
        raise
    _held[folder] = lock
    _made[folder] = _Made(new, before if moved is None else set(), moved)
    return moved


@dataclass
class _Made:
    """What claiming a run folder changed: the first folder it created (``None``: the run
    folder existed), the entries the run folder held before, where ``overwrite`` moved an old run."""

    created: Path | None
    before: set[str]
    moved: Path | None


_made: dict[Path, _Made] = {}  # per claimed folder


def _has_results(folder: Path) -> bool:
    """Whether a run wrote anything worth keeping under ``folder``: a checkpoint or metrics.json."""
    return any(p.name == "metrics.json" or p.suffix == ".ckpt" for p in folder.rglob("*") if p.is_file())


def discard_unstarted_runs() -> list[Path]:
    """Undo the run folders this process claimed whose run failed before it saved anything
    (no checkpoint, no metrics.json): a refused run leaves no orphan folder of logs.

    Only what the run added is removed: a folder it created (with the parent folders it
    created), or, in a folder that existed, the entries that were not there before. A run
    that ``overwrite=true`` moved aside comes back. Returns the paths removed.
    """
    removed = []
    for folder, made in list(_made.items()):
        if folder not in _held:
            continue
        added = [folder / name for name in os.listdir(folder) if name not in made.before] if folder.is_dir() else []
        if any(_has_results(p) if p.is_dir() else p.name == "metrics.json" or p.suffix == ".ckpt" for p in added):
            continue
        release_run_folder(folder)
        if made.created is not None:  # the run folder is ours: all of it goes, then its empty new parents
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            for parent in folder.parents:
                if not parent.is_relative_to(made.created):
                    break
                with contextlib.suppress(OSError):  # another run's folder may have appeared in it
                    parent.rmdir()
        else:
            for path in added:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        if made.moved is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()  # empty now
            if not folder.exists():
                os.rename(made.moved, folder)
                logging.getLogger("zoo").warning("the run moved to %s is back in %s", made.moved, folder)
    return removed


def release_run_folders() -> None:
    """Release every folder this process claimed (a command ending by an error on its way)."""
    for folder in list(_held):
        release_run_folder(folder)


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder`` (claimed and not yet released)."""
    return Path(os.path.abspath(folder)) in _held


def release_run_folder(folder: str | Path) -> None:
    _made.pop(Path(os.path.abspath(folder)), None)
    lock = _held.pop(Path(os.path.abspath(folder)), None)
    if lock is not None:
        lock.release()

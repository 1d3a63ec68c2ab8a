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
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from zoo.errors import ConfigError

_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


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
    """A binary file that replaces ``path`` when the ``with`` block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_folder(path.parent)


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
    """``<run folder>/.lock`` holding this process's pid while a run writes the folder.

    A second run pointed at a folder whose lock names a live process is refused with one
    line; a lock left by a process that no longer exists (a kill) is taken over.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise ConfigError(
                        f"run folder {self.path.parent} is in use by another run (pid {owner}); "
                        f"wait for it or give this run another folder (hydra.run.dir=...)"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as file:
                file.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise ConfigError(f"could not lock run folder {self.path.parent}; another run keeps taking it")

    def _owner(self) -> int | None:
        """The pid the lock names; ``None`` for a lock that names none (a writer killed mid-write)."""
        try:
            pid = int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid > 0 else None  # os.kill(-1, 0) would ask about every process

    def release(self) -> None:
        if self.held and self._owner() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

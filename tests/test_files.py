"""zoo.files: run-folder locks (flock plus an owner record that survives file systems
where flock is not shared) and the claim of a run folder (refuse, resume or move aside)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo import files
from zoo.errors import ConfigError
from zoo.files import RunLock, claim_run_folder, claim_sweep_folder, release_run_folder, run_in, this_process


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _record(**changes) -> str:
    return json.dumps({**this_process(), **changes}) + "\n"


def test_a_lock_records_its_owner_and_goes_with_the_release(tmp_path):
    unused = RunLock(tmp_path)
    assert not unused.held
    unused.release()  # a lock never taken: nothing to release
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner == {"host": socket.gethostname(), "pid": os.getpid(), "start": this_process()["start"],
                         "boot": this_process()["boot"]}  # fmt: skip
        assert isinstance(owner["start"], int) and owner["boot"]
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("record, who", [('{"host": "elsewhere", "pid": 4242}', "pid 4242 on elsewhere"), ("", "another process")])
def test_a_folder_flocked_by_a_live_process_is_refused(tmp_path, record, who):
    """Another process holds the flock (whatever its file says, if anything): refused, its
    file untouched, the holder named when its record can be read."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, {record.encode()!r})
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (tmp_path / ".lock").read_bytes()
        with pytest.raises(ConfigError, match=rf"is in use by another run \({who}\); wait for it"):
            RunLock(tmp_path).acquire()
        assert (tmp_path / ".lock").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # its death released the flock: the folder is free
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("which", ["parent", "init"])
def test_a_record_naming_a_live_process_refuses_where_flock_is_not_shared(tmp_path, which):
    """On NFS or Lustre flock may be granted while another run holds the folder: the record
    naming a live process of this machine (pid, start time and boot all match) refuses;
    pid 1 (a container's first process) included."""
    parent = os.getppid() if which == "parent" else 1
    live = {"pid": parent, "start": int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19])}
    (tmp_path / ".lock").write_text(_record(**live))
    with pytest.raises(ConfigError, match=rf"in use by another run \(pid {parent} on {socket.gethostname()}\)"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == parent


@pytest.mark.parametrize("stale", [
    "empty", "not json", "a bare pid (older zoo)", "a dead pid", "our pid, started at another time",
    "a live pid of another boot", "another host", "a pid that is not a number", "pid 0",
])  # fmt: skip
def test_a_stale_record_is_taken_over(tmp_path, stale):
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = this_process()
    content = {
        "empty": "",
        "not json": "{{{",
        "a bare pid (older zoo)": f"{os.getppid()}\n",
        "a dead pid": _record(pid=dead.pid),
        "our pid, started at another time": _record(start=me["start"] - 1),  # a container restart reused it
        "a live pid of another boot": _record(pid=os.getppid(), boot="another-boot"),
        "another host": _record(host="node-17"),  # its liveness cannot be asked: flock decides
        "a pid that is not a number": _record(pid=str(os.getppid())),
        "pid 0": _record(pid=0, start=files._start_time(os.getpid())),  # kill(0, 0) asks our own process group
    }[stale]
    (tmp_path / ".lock").write_text(content)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text()) == me
    assert not (tmp_path / ".lock").exists()


def _finished(folder: Path, status: str = "finished") -> None:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "metrics.json").write_text(json.dumps({"status": status}))


def test_what_a_folder_holds(tmp_path):
    assert run_in(tmp_path / "none") is None
    (tmp_path / "configured").mkdir()
    (tmp_path / "configured" / "config.yaml").write_text("seed: 1\n")  # written just before the first step
    assert run_in(tmp_path / "configured") == "started"
    tmp_path = tmp_path / "run"
    tmp_path.mkdir()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("")
    assert run_in(tmp_path) is None  # what a refused command may leave is not a run
    (tmp_path / "checkpoints").mkdir()
    assert run_in(tmp_path) is None
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert run_in(tmp_path) == "started"
    (tmp_path / "metrics.json").write_text('{"status": "interrupted"}')
    assert run_in(tmp_path) == "interrupted"
    (tmp_path / "metrics.json").write_text('{"test": {}}')  # metrics.json before statuses were recorded
    assert run_in(tmp_path) == "finished"


@pytest.mark.parametrize("status", ["finished", "interrupted", "started"])
def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(tmp_path, status):
    run = tmp_path / "run"
    _finished(run, status)
    if status == "started":
        (run / "metrics.json").unlink()
    before = _digest(run)
    article = "an" if status == "interrupted" else "a"
    with pytest.raises(ConfigError, match=rf"run folder {run} holds {article} {status} run; resume=true continues it"):
        claim_run_folder(run)
    assert _digest(run) == before and not (run / ".lock").exists()


def test_resume_claims_the_folder_and_overwrite_moves_the_run_aside(tmp_path):
    run = tmp_path / "run"
    _finished(run)
    before = _digest(run)
    assert claim_run_folder(run, resume=True) is None
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert claim_run_folder(run) is None  # this process holds it already
    release_run_folder(run)
    assert _digest(run) == before

    with pytest.raises(ConfigError, match="^resume=true continues the run in the folder and overwrite=true replaces it: give one$"):
        claim_run_folder(run, resume=True, overwrite=True)
    moved = claim_run_folder(run, overwrite=True)
    try:
        assert moved.parent == tmp_path and moved.name.startswith("run.replaced-")
        assert _digest(moved) == before  # moved whole, its lock file gone with the release
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
        assert claim_run_folder(run, overwrite=True) is None  # held: nothing moved twice
    finally:
        release_run_folder(run)
    assert not run.exists() or not any(run.iterdir())
    _finished(run)
    second = claim_run_folder(run, overwrite=True)  # the same second: a new name, nothing clobbered
    release_run_folder(run)
    assert second != moved and _digest(second) == before and _digest(moved) == before


def test_a_sweep_folder_holding_a_job_run_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    claim_sweep_folder(sweep)  # only what a refused job leaves: not a run
    release_run_folder(sweep)
    _finished(sweep / "1")
    with pytest.raises(ConfigError, match=rf"sweep folder {sweep} holds a started sweep"):
        claim_sweep_folder(sweep)
    claim_sweep_folder(sweep, resume=True)
    release_run_folder(sweep)
    moved = claim_sweep_folder(sweep, overwrite=True)
    release_run_folder(sweep)
    assert moved.name.startswith("sweep.replaced-") and (moved / "1" / "metrics.json").is_file()
    release_run_folder(sweep)  # releasing a folder no longer held is a no-op


@pytest.mark.parametrize("limit, refused", [(3_000, ".hydra/hydra.yaml"), (200_000, "checkpoints/")])
def test_a_file_size_limit_leaves_every_file_whole_or_absent(tmp_path, limit, refused):
    """Under ``ulimit -f`` (the process boundary is the subject: the limit is the process's)
    a file the run writes past the limit is absent, not cut, the error is one line naming
    it, and every file that is there reads whole."""
    import resource

    import torch
    import yaml

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG

    run = tmp_path / "run"
    script = Path(sys.executable).parent / "zoo-train"
    result = subprocess.run(
        [str(script), "model=mlp", "trainer.max_epochs=1", "callbacks.progress_bar=none", "trainer.enable_model_summary=false",
         f"hydra.run.dir={run}"], capture_output=True, text=True, preexec_fn=limited, timeout=600,
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
    assert f"Error: {run}/{refused}" in errors[0] and errors[0].endswith(": File too large")
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    assert not list(run.rglob("*.tmp"))  # no temporary file left behind
    files = [p for p in run.rglob("*") if p.is_file() and p.name not in (".lock",)]
    for path in files:
        if path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".ckpt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    assert not any(str(p.relative_to(run)).startswith(refused) for p in files if p.suffix != ".log")


def _full_disk_after(monkeypatch, n: int) -> None:
    """``os.write`` writes at most ``n`` more bytes, then fails as a full disk does."""
    real = os.write
    left = [n]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(28, "No space left on device")
        written = real(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


def test_an_append_that_fails_part_way_is_cut_back_whole(tmp_path, monkeypatch):
    from zoo.files import append_whole

    log = tmp_path / "metrics.csv"
    log.write_text("step,loss\n0,1.5\n")
    _full_disk_after(monkeypatch, 4)  # "1,1." of the row "1,1.25\n" reaches the disk
    with pytest.raises(OSError, match=rf"No space left on device: '{log}'"):
        append_whole(log, "1,1.25\n2,1.0\n")
    assert log.read_text() == "step,loss\n0,1.5\n"
    monkeypatch.undo()
    append_whole(log, "1,1.25\n")
    assert log.read_text() == "step,loss\n0,1.5\n1,1.25\n"


def test_metrics_csv_keeps_whole_rows_when_the_disk_fills(tmp_path, monkeypatch):
    """Rows are appended whole or not at all; a new column rewrites the file atomically."""
    import csv

    from zoo.loggers import ResumableCSVLogger

    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 2.0}, step=0)
    logger.save()
    path = tmp_path / "csv" / "metrics.csv"
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 3)
        logger.log_metrics({"train/loss": 1.0}, step=1)
        with pytest.raises(OSError, match="No space left on device"):
            logger.save()
    assert path.read_bytes() == before
    with monkeypatch.context() as patch:  # a new column: the whole file is rewritten, atomically
        patch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        logger.log_metrics({"val/acc": 0.5}, step=2)
        with pytest.raises(OSError, match=f"No space left on device: '{path}'"):
            logger.save()
    assert path.read_bytes() == before and not list(path.parent.glob(".*.tmp"))
    logger.log_metrics({"val/acc": 0.75}, step=3)
    logger.save()  # the rows that could not be written are written now: nothing is lost
    rows = list(csv.DictReader(path.open()))
    assert [(r["step"], r["train/loss"], r["val/acc"]) for r in rows] == [
        ("0", "2.0", ""), ("1", "1.0", ""), ("2", "", "0.5"), ("3", "", "0.75"),
    ]  # fmt: skip


@pytest.fixture
def claims():
    yield
    files.release_run_folders()


def test_a_failed_run_in_a_new_folder_leaves_no_folder_and_no_empty_parents(tmp_path, claims):
    (tmp_path / "outputs").mkdir()
    run = tmp_path / "outputs" / "day" / "time" / "run"
    claim_run_folder(run)  # creates day/time/run
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")  # files of any other name are not results
    (run / "train.log").write_text("started\n")
    (tmp_path / "outputs" / "day" / "other-run").mkdir()  # another run's folder appears in a parent we created
    assert files.discard_unstarted_runs() == [run]
    assert sorted(p.name for p in (tmp_path / "outputs").rglob("*")) == ["day", "other-run"]  # time/ went, day/ stays
    assert not files._held


def test_a_failed_run_in_a_users_folder_removes_only_what_it_added(tmp_path, claims):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    claim_run_folder(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("x")
    (tmp_path / "data" / "added-inside.txt").write_text("x")  # inside a folder that was there: kept
    assert sorted(files.discard_unstarted_runs()) == [tmp_path / n for n in (".hydra", ".lock", "train.log")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert (tmp_path / "data" / "added-inside.txt").exists() and not files._held


@pytest.mark.parametrize("result", ["checkpoints/last.ckpt", "metrics.json", "sub/dir/best.ckpt", "sub/metrics.json", "model.ckpt"])
def test_a_run_that_saved_something_keeps_its_folder(tmp_path, claims, result):
    run = tmp_path / "run"
    claim_run_folder(run)
    (run / result).parent.mkdir(parents=True, exist_ok=True)
    (run / result).write_text("{}")
    assert files.discard_unstarted_runs() == []
    assert (run / result).is_file() and files.holds(run)  # still this process's, released at the end


def test_a_failed_overwrite_brings_the_old_run_back(tmp_path, claims):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("old")
    (run / "config.yaml").write_text("old: 1\n")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- old\n")
    moved = claim_run_folder(run, overwrite=True)
    assert moved is not None and not (run / "config.yaml").exists()
    (run / "train.log").write_text("new run, refused")
    (run / ".hydra").mkdir()  # names the old run had too: the new run's, all removed
    (run / ".hydra" / "overrides.yaml").write_text("- new\n")
    files.discard_unstarted_runs()
    assert (run / "checkpoints" / "last.ckpt").read_text() == "old" and (run / "config.yaml").read_text() == "old: 1\n"
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- old\n"
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "checkpoints", "config.yaml"] and not moved.exists()


def test_each_claimed_folder_is_judged_on_its_own(tmp_path, claims):
    """Three claims: one released (not this process's any more), one that saved a checkpoint,
    one that saved nothing; only the last is removed, whatever the order."""
    released, saved, failed = tmp_path / "released", tmp_path / "saved", tmp_path / "failed"
    for folder in (released, saved, failed):
        claim_run_folder(folder)
        (folder / "train.log").write_text("x")
    release_run_folder(released)
    (saved / "last.ckpt").write_text("weights")
    assert files.discard_unstarted_runs() == [failed]
    assert (released / "train.log").exists() and (saved / "last.ckpt").exists() and not failed.exists()


def test_a_claimed_folder_the_run_removed_itself_is_no_error(tmp_path, claims):
    run = tmp_path / "run"
    claim_run_folder(run)
    files._held[run].release()
    run.rmdir()
    assert files.discard_unstarted_runs() == [run] and not files.holds(run)


def test_the_old_run_goes_aside_under_the_time_of_the_move_then_numbered(tmp_path, monkeypatch):
    class Frozen(files.datetime):
        @classmethod
        def now(cls, tz=None):
            return files.datetime(2026, 12, 7, 9, 5, 3)

    monkeypatch.setattr(files, "datetime", Frozen)
    run = tmp_path / "run"
    assert files._aside(run) == tmp_path / "run.replaced-2026-12-07_09-05-03"
    (tmp_path / "run.replaced-2026-12-07_09-05-03").mkdir()
    assert files._aside(run) == tmp_path / "run.replaced-2026-12-07_09-05-03-2"
    for n in range(2, 1000):
        (tmp_path / f"run.replaced-2026-12-07_09-05-03-{n}").mkdir()
    with pytest.raises(ConfigError, match=rf"^too many replaced runs beside {run}$"):
        files._aside(run)


def test_stale_temporaries_are_those_of_dead_writers_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        names = {
            f".last.ckpt.{dead.pid}.tmp": True, f".best.ckpt.{dead.pid}.tmp": True,
            f".last.ckpt.{os.getpid()}.tmp": False,  # ours, being written
            f".last.ckpt.{live.pid}.tmp": False,  # another live writer's
            f"last.ckpt.{dead.pid}.tmp": False, ".last.ckpt.tmp": False,  # not a writer's temporary
            f".last.ckpt.{dead.pid}.TMP": False, f".last.ckpt.{dead.pid}.tmp.old": False,
        }  # fmt: skip
        for name in names:
            (tmp_path / name).write_text("x")
        removed = files.remove_stale_temporaries(tmp_path)
        assert sorted(removed) == sorted(tmp_path / n for n, stale in names.items() if stale)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, stale in names.items() if not stale)
        with pytest.raises(subprocess.TimeoutExpired):  # asked whether it lives, not signalled
            live.wait(timeout=0.3)
    finally:
        live.kill()
        live.wait()


def test_files_are_created_with_mode_644_and_appended_whole(tmp_path):
    umask = os.umask(0o022)
    try:
        files.append_whole(tmp_path / "train.log", "one\n")  # created by the append
        files.append_whole(tmp_path / "train.log", "two\n")
        with RunLock(tmp_path):
            lock_mode = (tmp_path / ".lock").stat().st_mode & 0o777
    finally:
        os.umask(umask)
    assert (tmp_path / "train.log").read_text() == "one\ntwo\n"
    assert ((tmp_path / "train.log").stat().st_mode & 0o777, lock_mode) == (0o644, 0o644)


def test_atomic_write_takes_bytes_and_text_and_the_writer_is_a_file(tmp_path):
    files.atomic_write(tmp_path / "a.bin", b"\x00\xff")
    files.atomic_write(tmp_path / "a.txt", "é")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff" and (tmp_path / "a.txt").read_bytes() == "é".encode()
    with files.atomic_writer(tmp_path / "b.bin") as file:
        file.write(b"abc")
        assert file.tell() == 3  # what the writer does not wrap is the file's own
    assert (tmp_path / "b.bin").read_bytes() == b"abc"


def test_a_write_error_the_writer_swallowed_is_raised_naming_the_file(tmp_path, monkeypatch):
    """torch.save catches the OSError of a full disk and raises a RuntimeError naming no file:
    the first OSError of the writes is what the caller gets, naming the destination."""
    monkeypatch.setattr(files, "open", lambda *a, **k: open("/dev/full", "wb", buffering=0), raising=False)
    target = tmp_path / "last.ckpt"
    with pytest.raises(OSError) as caught:
        with files.atomic_writer(target) as file:
            for _ in range(2):
                with contextlib.suppress(OSError):
                    file.write(b"weights")
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert not target.exists()


def test_the_start_time_is_read_after_the_last_parenthesis_of_the_name(tmp_path):
    """/proc/<pid>/stat holds the command name in parentheses, and a name may hold ') '."""
    program = tmp_path / "a) 1 2 3"
    program.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(program), "30"])
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        assert "(a) 1 2 3)" in stat
        assert files._start_time(child.pid) == int(stat.rsplit(")", 1)[1].split()[19])
    finally:
        child.kill()
        child.wait()


def test_a_record_over_4_kib_is_not_read(tmp_path):
    """A lock file is one short JSON line; a larger file is not ours, whatever it names."""
    parent = os.getppid()
    record = json.loads(_record(pid=parent, start=files._start_time(parent)))
    line = json.dumps({**record, "pad": ""})
    (tmp_path / ".lock").write_text(json.dumps({**record, "pad": "x" * (4097 - len(line))}))
    assert (tmp_path / ".lock").stat().st_size == 4097
    assert files.read_owner(tmp_path / ".lock") is None
    with RunLock(tmp_path):  # taken over
        assert json.loads((tmp_path / ".lock").read_text()) == this_process()

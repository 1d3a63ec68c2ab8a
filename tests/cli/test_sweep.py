"""The sweep's table (zoo.cli.sweep) from job folders the test writes as zoo-train leaves
them: the files compared whole, the best row by a maximised and by a minimised monitor,
ties, failed jobs, folders that are not jobs, the overrides that tell the jobs apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zoo.cli.sweep import SweepSummary, write_summary


def _job(sweep: Path, name: str, overrides: list[str] | None, record: dict | None = None) -> None:
    """A job folder: ``.hydra/overrides.yaml`` (``None``: none written) and, unless the job
    failed, its ``metrics.json``."""
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- '{o}'\n" for o in overrides))
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps(record))


def _record(score: float, mode: str | None, acc: float, loss: float, seconds: float) -> dict:
    best = {"monitor": "val/acc" if mode != "min" else "val/loss", "score": score}
    if mode is not None:  # a metrics.json of an older zoo records no mode: the score is maximised
        best["mode"] = mode
    return {"best_val": best, "test": {"test/acc": acc, "test/loss": loss}, "seconds": seconds}


# Scores chosen so that the highest, the lowest and the first job are three different rows:
# a flipped comparison, or the first row always marked, cannot pass both modes. 10000 s is
# the first value the Markdown table writes in 3 significant digits.
@pytest.mark.parametrize("mode, best_job", [("max", "2"), ("min", "0")])
def test_the_table_whole_with_the_best_row_highest_for_max_and_lowest_for_min(tmp_path, mode, best_job):
    monitor = "val/acc" if mode == "max" else "val/loss"
    _job(tmp_path, "0", ["model=mlp", "optim.lr=0.1"], _record(0.25, mode, 0.5, 1.5, 3.5))
    _job(tmp_path, "1", ["model=mlp", "optim.lr=0.01", "data.root=a|b"], _record(0.5, mode, 0.75, 1.25, 10000.0))
    _job(tmp_path, "2", ["model=mlp", "optim.lr=0.001"], _record(0.875, mode, 0.125, 0.0625, 9999.5))
    _job(tmp_path, "10", ["model=mlp", "optim.lr=1.0"])  # failed: no metrics.json
    _job(tmp_path, "custom", ["model=mlp"], _record(0.75, mode, 0.25, 2.0, 1.0))  # not a number: last
    (tmp_path / "logs").mkdir()  # a folder without .hydra/ is not a job
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    rows = write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10", "custom"]

    star = {job: "*" if job == best_job else "" for job in ("0", "1", "2", "custom")}
    assert (tmp_path / "summary.csv").read_bytes().decode() == (
        "best,job,overrides,status,monitor,best_val,test/acc,test/loss,seconds,all_overrides\r\n"
        f"{star['0']},0,optim.lr=0.1,done,{monitor},0.25,0.5,1.5,3.5,model=mlp optim.lr=0.1\r\n"
        f"{star['1']},1,optim.lr=0.01 data.root=a|b,done,{monitor},0.5,0.75,1.25,10000.0,model=mlp optim.lr=0.01 data.root=a|b\r\n"
        f"{star['2']},2,optim.lr=0.001,done,{monitor},0.875,0.125,0.0625,9999.5,model=mlp optim.lr=0.001\r\n"
        ",10,optim.lr=1.0,failed (no metrics.json),,,,,,model=mlp optim.lr=1.0\r\n"
        f"{star['custom']},custom,(none),done,{monitor},0.75,0.25,2.0,1.0,model=mlp\r\n"
    )  # fmt: skip
    mark = {job: "*" if job == best_job else "" for job in star}
    assert (tmp_path / "summary.md").read_text() == (
        f"# Sweep summary: {tmp_path}\n"
        "\n"
        "5 jobs; * marks the best validation score.\n"
        "Overrides of every job: `model=mlp`\n"
        "\n"
        "| best | job | overrides | status | monitor | best_val | test/acc | test/loss | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {mark['0']} | 0 | optim.lr=0.1 | done | {monitor} | 0.2500 | 0.5000 | 1.5000 | 3.5000 |\n"
        f"| {mark['1']} | 1 | optim.lr=0.01 data.root=a\\|b | done | {monitor} | 0.5000 | 0.7500 | 1.2500 | 1e+04 |\n"
        f"| {mark['2']} | 2 | optim.lr=0.001 | done | {monitor} | 0.8750 | 0.1250 | 0.0625 | 9999.5000 |\n"
        "|  | 10 | optim.lr=1.0 | failed (no metrics.json) |  |  |  |  |  |\n"
        f"| {mark['custom']} | custom | (none) | done | {monitor} | 0.7500 | 0.2500 | 2.0000 | 1.0000 |\n"
    )  # fmt: skip


def test_equal_scores_mark_the_first_job_only(tmp_path):
    for job in "012":
        _job(tmp_path, job, [f"seed={job}"], _record(0.5, "min", 0.5, 0.5, 1.0))
    assert [r.get("best") for r in write_summary(tmp_path)] == ["*", None, None]


def test_a_record_without_a_mode_is_maximised_and_a_single_job_is_the_best(tmp_path):
    _job(tmp_path, "0", ["a=1", "b=2", "seed=0"], _record(0.25, None, 0.5, 0.5, 1.0))
    _job(tmp_path, "1", ["a=1", "b=2", "seed=1"], {"best_val": {"score": 0.75}})  # nothing else recorded
    assert [r.get("best") for r in write_summary(tmp_path)] == [None, "*"]
    assert (tmp_path / "summary.csv").read_bytes().decode().splitlines()[1:] == [
        ",0,seed=0,done,val/acc,0.25,0.5,0.5,1.0,a=1 b=2 seed=0", "*,1,seed=1,done,,0.75,,,,a=1 b=2 seed=1",
    ]  # fmt: skip
    assert "\nOverrides of every job: `a=1` `b=2`\n" in (tmp_path / "summary.md").read_text()
    single = tmp_path / "single"
    _job(single, "0", ["seed=0"], _record(0.25, "min", 0.5, 0.5, 1.0))
    assert [r.get("best") for r in write_summary(single)] == ["*"]


def test_jobs_without_overrides_or_scores_and_an_empty_sweep(tmp_path):
    for job in ("2", "1"):
        _job(tmp_path, job, None)  # Hydra wrote no overrides.yaml: the job has none
    rows = write_summary(tmp_path)
    assert [(r["job"], r["overrides"], r["all_overrides"], r.get("best")) for r in rows] == [
        ("1", "(none)", "", None), ("2", "(none)", "", None),
    ]  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_summary(empty) == []
    assert (empty / "summary.csv").read_bytes().decode() == "best,job,overrides,status,monitor,best_val,seconds,all_overrides\r\n"


def test_the_hydra_callback_writes_the_table_into_the_sweep_folder(tmp_path):
    _job(tmp_path, "0", ["seed=0"], _record(0.5, "max", 0.5, 0.5, 1.0))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert (tmp_path / "summary.csv").read_text().splitlines()[1] == "*,0,(none),done,val/acc,0.5,0.5,0.5,1.0,seed=0"
    gone = tmp_path / "never-made"
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(gone)}}}))
    assert not gone.exists()  # a sweep that made no folder gets no table

"""The sweep's table (zoo.cli.sweep) from job folders the test writes as zoo-train leaves
them: the best row by a maximised and by a minimised monitor, ties, failed jobs, the
overrides that tell the jobs apart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from zoo.cli.sweep import write_summary


def _job(sweep: Path, name: str, overrides: list[str], score: float | None = None, mode: str = "max") -> None:
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if score is not None:  # a failed job leaves no metrics.json
        monitor = "val/acc" if mode == "max" else "val/loss"
        record = {"best_val": {"monitor": monitor, "mode": mode, "score": score},
                  "test": {"test/acc": score / 2, "test/loss": 1 - score}, "seconds": 3.5}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(record))


def _rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


# Scores chosen so that the highest, the lowest and the first job are three different rows:
# a flipped comparison, or the first row always marked, cannot pass both modes.
@pytest.mark.parametrize("mode, best_job", [("max", "2"), ("min", "0")])
def test_the_best_row_is_the_highest_score_for_max_and_the_lowest_for_min(tmp_path, mode, best_job):
    for job, (lr, score) in enumerate([("0.1", 0.30), ("0.01", 0.55), ("0.001", 0.90)]):
        _job(tmp_path, str(job), ["model=mlp", f"optim.lr={lr}"], score, mode)
    _job(tmp_path, "3", ["model=mlp", "optim.lr=1.0"])  # failed
    write_summary(tmp_path)
    rows = _rows(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["best"] for r in rows] == ["*" if r["job"] == best_job else "" for r in rows]
    assert [r["overrides"] for r in rows] == ["optim.lr=0.1", "optim.lr=0.01", "optim.lr=0.001", "optim.lr=1.0"]
    assert [r["status"] for r in rows] == ["done", "done", "done", "failed (no metrics.json)"]
    assert [r["best_val"] for r in rows] == ["0.3", "0.55", "0.9", ""]
    assert [r["test/acc"] for r in rows] == ["0.15", "0.275", "0.45", ""]
    assert list(rows[0]) == ["best", "job", "overrides", "status", "monitor", "best_val", "test/acc", "test/loss",
                             "seconds", "all_overrides"]  # fmt: skip
    page = (tmp_path / "summary.md").read_text()
    assert "Overrides of every job: `model=mlp`" in page
    best_line = next(line for line in page.splitlines() if line.startswith("| * |"))
    assert best_line.startswith(f"| * | {best_job} |")


def test_equal_scores_mark_the_first_job_only(tmp_path):
    for job in "012":
        _job(tmp_path, job, [f"seed={job}"], 0.5, "min")
    assert [r.get("best") for r in write_summary(tmp_path)] == ["*", None, None]


def test_jobs_are_in_numeric_order_and_a_sweep_without_scores_marks_none(tmp_path):
    for job in ("10", "2", "1"):
        _job(tmp_path, job, ["model=mlp"])
    rows = write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["1", "2", "10"]  # not "1", "10", "2"
    assert [r.get("best") for r in rows] == [None] * 3
    assert [r["overrides"] for r in rows] == ["(none)"] * 3

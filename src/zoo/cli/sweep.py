"""The table of a sweep: after ``zoo-train -m ...`` (a grid, or the Optuna sweeper),
``summary.csv`` and ``summary.md`` in the sweep folder hold one row per job.

A Hydra callback (``hydra.callbacks.sweep_summary`` in ``configs/train.yaml``), run once
all jobs have finished. Each row reads the job's own files: its overrides
(``.hydra/overrides.yaml``) and its ``metrics.json`` (best validation score, test
metrics, seconds). The best row by the validation score is marked. A job that failed
leaves no ``metrics.json`` and is listed as such. Standard library and OmegaConf only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from zoo.files import atomic_write

log = logging.getLogger("zoo")


def _job_folders(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def summary_rows(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One dict per job folder of ``sweep_dir`` (job, the overrides that tell it apart, best
    validation score and how it ranks, test metrics, seconds), and the overrides every job shares."""
    rows, overrides = [], []
    for job in _job_folders(Path(sweep_dir)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides.append([str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else [])
        row: dict[str, Any] = {"job": job.name, "all_overrides": " ".join(overrides[-1])}
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            row["status"] = "failed (no metrics.json)"
            rows.append(row)
            continue
        record = json.loads(metrics_file.read_text())
        best = record.get("best_val") or {}
        row.update(status="done", monitor=best.get("monitor", ""), mode=best.get("mode", "max"), best_val=best.get("score"))
        row.update(record.get("test", {}), seconds=record.get("seconds"))
        rows.append(row)
    common = set.intersection(*map(set, overrides)) if overrides else set()
    for row, own in zip(rows, overrides):
        row["overrides"] = " ".join(o for o in own if o not in common) or "(none)"
    return rows, sorted(common)


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows, common = summary_rows(sweep_dir)
    scored = [r for r in rows if isinstance(r.get("best_val"), (int, float))]
    if scored:  # the jobs of a sweep share their monitor, and so how it ranks
        (min if scored[0]["mode"] == "min" else max)(scored, key=lambda r: r["best_val"])["best"] = "*"
    columns = ["best", "job", "overrides", "status", "monitor", "best_val"]
    columns += sorted({k for r in rows for k in r if k.startswith("test/")}) + ["seconds", "all_overrides"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(sweep_dir / "summary.csv", buffer.getvalue())

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
        return "" if value is None else str(value).replace("|", "\\|")

    shown = columns[:-1]  # the Markdown table leaves out all_overrides: the shared ones are listed once
    lines = [f"# Sweep summary: {sweep_dir}", "", f"{len(rows)} jobs; * marks the best validation score."]
    if common:
        lines.append("Overrides of every job: " + " ".join(f"`{o}`" for o in common))
    lines += ["", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in shown) + " |" for r in rows]
    atomic_write(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback: the sweep's table once every job has run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            log.info("sweep summary of %d jobs: %s", len(rows), sweep_dir / "summary.md")

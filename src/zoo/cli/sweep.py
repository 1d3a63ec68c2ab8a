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


def summary_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per job folder of ``sweep_dir``: job, overrides, best val score, test metrics, seconds."""
    rows = []
    for job in _job_folders(Path(sweep_dir)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": job.name, "all_overrides": [str(o) for o in overrides]}
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            row["status"] = "failed (no metrics.json)"
            rows.append(row)
            continue
        record = json.loads(metrics_file.read_text())
        best = record.get("best_val") or {}
        row.update(status="done", monitor=best.get("monitor", ""), best_val=best.get("score"), seconds=record.get("seconds"))
        row.update(record.get("test", {}))
        rows.append(row)
    # What tells the jobs apart: the overrides not shared by every job.
    common = set.intersection(*(set(r["all_overrides"]) for r in rows)) if rows else set()
    for row in rows:
        row["overrides"] = " ".join(o for o in row["all_overrides"] if o not in common) or "(none)"
        row["all_overrides"] = " ".join(row["all_overrides"])
    return rows


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = summary_rows(sweep_dir)
    scored = [r for r in rows if isinstance(r.get("best_val"), (int, float))]
    if scored:
        mode = _best_mode(sweep_dir, scored)
        (min if mode == "min" else max)(scored, key=lambda r: r["best_val"])["best"] = "*"
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
    common = set.intersection(*(set(r["all_overrides"].split()) for r in rows)) if rows else set()
    lines = [f"# Sweep summary: {sweep_dir}", "", f"{len(rows)} jobs; * marks the best validation score."]
    if common:
        lines.append("Overrides of every job: " + " ".join(f"`{o}`" for o in sorted(common)))
    lines += ["", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in shown) + " |" for r in rows]
    atomic_write(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    return rows


def _best_mode(sweep_dir: Path, scored: list[dict[str, Any]]) -> str:
    """``min`` or ``max``: how the jobs' own monitor ranks (all jobs of a sweep share it)."""
    record = json.loads((sweep_dir / scored[0]["job"] / "metrics.json").read_text())
    return (record.get("best_val") or {}).get("mode", "max")


class SweepSummary(Callback):
    """Hydra callback: the sweep's table once every job has run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            log.info("sweep summary of %d jobs: %s", len(rows), sweep_dir / "summary.md")

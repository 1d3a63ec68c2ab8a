"""A CSV logger whose history survives a resume.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when a run starts in a folder that has
one, so a resumed run used to lose every row before the resume. Here a run resumed from a
checkpoint taken after ``k`` optimizer steps keeps the rows of steps ``0 .. k-1`` (what the
checkpointed run had logged) and drops the rest, which the resumed run logs again: the
file ends as an uninterrupted run's would (Lightning writes each row to disk as it is
logged, so the rows a checkpoint stands for are there when a kill comes).
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the rows before ``resume_step`` (``None``: a fresh run)."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = os.path.join(self.log_dir, "metrics.csv")
        kept: list[dict[str, str]] = []
        header: list[str] = []
        if self.resume_step is not None and os.path.isfile(path):
            with open(path, newline="") as file:
                reader = csv.DictReader(file)
                header = list(reader.fieldnames or [])
                kept = [row for row in reader if row.get("step") and int(float(row["step"])) < self.resume_step]
        writer = super().experiment  # a fresh writer: Lightning removes the old file here
        if kept:
            with open(path, "w", newline="") as file:
                out = csv.DictWriter(file, fieldnames=header)
                out.writeheader()
                out.writerows(kept)
            writer.metrics_keys = sorted(header)  # new rows append under the same header
        return writer

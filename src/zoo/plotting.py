"""Training curves from a run's ``csv/metrics.csv``."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def read_epoch_metrics(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` from a Lightning CSV log (last value logged per epoch)."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    series[key][epoch] = float(value)
    return dict(series)


def plot_curves(metrics_csv: Path, out_png: Path) -> Path:
    """Loss and accuracy per epoch, train against validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_epoch_metrics(metrics_csv)
    panels = [
        ("loss", ["train/loss_epoch", "val/loss"]),
        ("top-1 accuracy", ["train/acc", "val/acc"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 4), constrained_layout=True)
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in series:
                epochs = sorted(series[key])
                ax.plot([e + 1 for e in epochs], [series[key][e] for e in epochs], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png

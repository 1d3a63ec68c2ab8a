"""Training curves from a run's ``csv/metrics.csv``."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from zoo.files import atomic_write


def _number(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_epoch_metrics(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` from a Lightning CSV log (last value logged per epoch).

    The file may have been edited or cut short: cells that are not numbers, cells beyond
    the header (``csv`` files them under the key ``None``) and rows without an epoch are
    skipped, so a damaged log costs points of the plot, not the end of a finished run.
    """
    series: dict[str, dict[int, float]] = defaultdict(dict)
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            epoch = _number(row.get("epoch"))
            if epoch is None or epoch != epoch:  # missing, text or NaN
                continue
            for key, value in row.items():
                number = _number(value) if isinstance(key, str) and key not in ("epoch", "step") else None
                if number is not None:
                    series[key][int(epoch)] = number
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
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    atomic_write(out_png, image.getvalue())
    return out_png

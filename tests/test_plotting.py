"""zoo.plotting: curves drawn from a metrics.csv that was edited or cut short."""

from __future__ import annotations

from PIL import Image

from zoo.plotting import plot_curves, read_epoch_metrics


def test_a_damaged_metrics_csv_still_gives_its_numbers_and_a_plot(tmp_path):
    """A row with a cell beyond the header, text where a number was, a row without an epoch
    and a cut last row: the numbers there are read, the rest skipped (once a traceback at
    the end of a finished run)."""
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text(
        "epoch,step,train/acc,val/acc\n"
        "0,4,0.5,0.625,surplus\n"  # one cell more than the header
        "1,9,n/a,0.75\n"  # text where a number was
        ",10,0.9,\n"  # no epoch
        "2,14,0.875,0.8125\n"
        "3,19,0.9"  # cut mid-row
    )
    assert read_epoch_metrics(csv_file) == {
        "train/acc": {0: 0.5, 2: 0.875, 3: 0.9}, "val/acc": {0: 0.625, 1: 0.75, 2: 0.8125},
    }  # fmt: skip
    png = plot_curves(csv_file, tmp_path / "curves.png")
    assert Image.open(png).size == (1000, 400)
    assert not list(tmp_path.glob(".*.tmp"))

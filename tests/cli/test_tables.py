"""zoo.cli.tables: zoo-models and zoo-bench print a table that fits the terminal, Markdown in a pipe, or CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from zoo.bench.models import Row
from zoo.cli import bench, models
from zoo.cli.tables import Column, TextTable, fit, print_table, resolve_format, to_markdown
from zoo.models.weights import list_weights

RESNET18_TITLE = ("weights (accuracy on ImageNet-1K for torchvision's, on the declared dataset for yours; "
                  "zoo.create_model(name, weights=...) loads them)")
RESNET18_HEADER = ["model", "weights", "acc@1", "acc@5", "GFLOPS", "MB", "resize->crop"]
# torchvision's metadata of ResNet18_Weights.IMAGENET1K_V1 (the default, and its only weights).
RESNET18_ROW = ["resnet18", "IMAGENET1K_V1 (DEFAULT)", "69.758", "89.078", "1.81", "44.7", "256->224 bilinear"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    """What a terminal looks like to ``isatty``."""

    def isatty(self) -> bool:
        return True


def terminal(width: int) -> Console:
    return Console(width=width, file=Terminal(), force_terminal=True)


def shown(console: Console) -> str:
    return ANSI.sub("", console.file.getvalue())


# --------------------------------------------------------------------------- md and csv: every cell in full


def test_weights_as_markdown_hold_every_cell(capsys):
    models.main(["--weights", "resnet18", "--format", "md"])
    assert capsys.readouterr().out.splitlines() == [
        RESNET18_TITLE,
        "",
        "| model | weights | acc@1 | acc@5 | GFLOPS | MB | resize->crop |",
        "|---|---|---:|---:|---:|---:|---:|",
        "| resnet18 | IMAGENET1K_V1 (DEFAULT) | 69.758 | 89.078 | 1.81 | 44.7 | 256->224 bilinear |",
    ]


def test_weights_as_csv_parse_back_and_keep_the_title_off_stdout(capsys):
    models.main(["--weights", "resnet18", "--format", "csv"])
    out, err = capsys.readouterr()
    assert out == ("model,weights,acc@1,acc@5,GFLOPS,MB,resize->crop\n"
                   "resnet18,IMAGENET1K_V1 (DEFAULT),69.758,89.078,1.81,44.7,256->224 bilinear\n")
    assert list(csv.reader(io.StringIO(out))) == [RESNET18_HEADER, RESNET18_ROW]
    assert err.strip() == RESNET18_TITLE


def test_the_model_table_as_markdown(capsys):
    """LeNet-5's counts as tests/cli/test_launch.py derives them by hand: 60,806 parameters, 416,520 MACs."""
    models.main(["lenet5", "--format", "md"])
    assert capsys.readouterr().out.splitlines()[2:] == [
        "| model | params | GMACs | input (one example) |",
        "|---|---:|---:|---:|",
        "| lenet5 | 60,806 | 0.0004165 | 1x32x32 |",
    ]


def test_markdown_escapes_what_would_break_a_row():
    table = TextTable("t", [Column("a"), Column("b")], [["x | y", "two\nlines"]])
    assert to_markdown(table).splitlines()[-1] == r"| x \| y | two lines |"


# --------------------------------------------------------------------------- auto: table on a terminal, md in a pipe


def test_auto_is_markdown_in_a_pipe(capsys):
    """``zoo-models --weights resnet18 | cat``: stdout is no terminal (here: pytest's capture)."""
    models.main(["--weights", "resnet18"])
    piped = capsys.readouterr().out
    models.main(["--weights", "resnet18", "--format", "md"])
    assert piped == capsys.readouterr().out
    assert "| resnet18 | IMAGENET1K_V1 (DEFAULT) | 69.758 |" in piped


def test_auto_is_a_table_on_a_terminal_whatever_force_color_says(monkeypatch):
    assert resolve_format("auto", Console(file=Terminal())) == "table"
    assert resolve_format("auto", Console(file=io.StringIO())) == "md"
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then calls any file a terminal; a pipe still gets Markdown
    assert resolve_format("auto", Console(file=io.StringIO())) == "md"
    assert resolve_format("csv", Console(file=Terminal())) == "csv"
    console = Console(width=160, file=Terminal())
    print_table(models.weights_table("resnet18"), "auto", console)
    assert "┃ model    ┃ weights" in shown(console)


# --------------------------------------------------------------------------- table: fitted, nothing cut


@pytest.mark.parametrize("width", [80, 160])
def test_the_table_shows_every_model_and_weights_name_whole(width):
    table = models.weights_table()
    console = terminal(width)
    print_table(table, "table", console)
    out = shown(console)
    assert "…" not in out and max(cell_len(line) for line in out.splitlines()) <= width
    names = {name for name, *_ in table.rows} | {w.member for name, *_ in table.rows for w in list_weights(name)}
    assert len(names) > 30 and "IMAGENET1K_SWAG_LINEAR_V1" in names
    assert [name for name in names if not re.search(rf"(?<![\w]){name}(?![\w])", out)] == []
    last = out.splitlines()[-1]
    if width == 80:  # 15 + 25 + 6 + 12 characters of names, acc@1 and resize->crop, 13 of rules: 71
        assert last == "Left out to fit 80 columns: acc@5, GFLOPS, MB (--format md shows every column)."
    else:
        assert last.startswith("└") and "acc@5" in out and "resize->crop" in out


def test_resnet18_fits_80_columns_with_every_column():
    console = terminal(80)
    print_table(models.weights_table("resnet18"), "table", console)
    out = shown(console)
    assert "…" not in out and "Left out" not in out
    assert "│ resnet18 │ IMAGENET1K_V1 " in out and "│ 69.758 │ 89.078 │" in out and "44.7" in out


def test_columns_go_in_their_order_only_when_needed():
    """At exactly the width of every column's longest word nothing goes; one less, the first to go."""
    table = TextTable("t", [Column("name"), Column("second", drop=2), Column("first", drop=1), Column("third", drop=3)],
                      [["a_long_name", "1234567", "123456", "12345678 words"]])  # fmt: skip
    minimum = 11 + 7 + 6 + 8 + 3 * 4 + 1
    assert fit(table, minimum)[1] == []
    assert fit(table, minimum - 1)[1] == [table.columns[2]]
    assert fit(table, minimum - 6 - 3)[1] == [table.columns[2]]  # its word and its bar and spaces
    assert fit(table, minimum - 6 - 3 - 1)[1] == table.columns[1:3]
    console = terminal(minimum)
    print_table(table, "table", console)
    out = shown(console)
    assert "a_long_name" in out and "12345678" in out and "Left out" not in out


def test_narrower_than_the_names_cells_fold_rather_than_cut():
    console = terminal(30)
    print_table(models.weights_table("resnet18"), "table", console)
    out = shown(console)
    assert "…" not in out and max(cell_len(line) for line in out.splitlines()[:-1]) <= 30  # the note: one line
    assert "69.758" in out and out.splitlines()[-1].startswith("Left out to fit 30 columns: acc@5, GFLOPS, MB, resize->crop")
    first = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│"))
    assert first == "resnet18"  # folded over lines, every character kept


# --------------------------------------------------------------------------- zoo-bench's table


def timed_rows() -> list[Row]:
    ref = {"torchvision": {"params": 11_689_512, "gflops": 1.81, "acc1": 69.758}}
    measured = {}
    for key, value in (("ours_train_img_s", 1234.5), ("ours_infer_img_s", 4321.0),
                       ("train_ratio_vs_torchvision", 0.98765), ("infer_ratio_vs_torchvision", 1.0123)):  # fmt: skip
        measured |= {key: value, f"{key}_min": value * 0.9, f"{key}_max": value * 1.1}
    return [Row("resnet18", 11_689_512, 1_814_000_000, 224, ref=ref, measured=measured),
            Row("transformer_small", 237_568, 3_899_000, None)]  # fmt: skip


def test_zoo_bench_table_fits_80_columns_and_markdown_keeps_every_column(capsys):
    console = terminal(80)
    bench.print_table(timed_rows(), "out/bench", "table", console)
    out = shown(console)
    assert "…" not in out and max(cell_len(line) for line in out.splitlines()[:-1]) <= 80
    assert "│ resnet18          │ 11,689,512 │" in out and "transformer_small" in out
    assert "1.23e+03" in out and "(1.11e+03-1.36e+03)" in out and "(0.889-1.09)" in out  # train: kept
    assert out.splitlines()[-1] == ("Left out to fit 80 columns: published params, GMACs, published GMACs, acc@1, "
                                    "infer img/s, infer vs tv (--format md shows every column).")  # fmt: skip
    bench.print_table(timed_rows(), "out/bench", "md")
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| model | params | published | GMACs | published | acc@1 | train img/s | infer img/s "
                        "| train vs tv | infer vs tv | check |")  # fmt: skip
    assert lines[4] == ("| resnet18 | 11,689,512 | 11,689,512 | 1.814 | 1.81 | 69.758 | 1.23e+03 (1.11e+03-1.36e+03) "
                        "| 4.32e+03 (3.89e+03-4.75e+03) | 0.988 (0.889-1.09) | 1.01 (0.911-1.11) | ok |")  # fmt: skip


def test_zoo_bench_prints_csv_on_request(tmp_path, capsys):
    bench.main(["resnet18", "--out", str(tmp_path), "--format", "csv"])
    out, err = capsys.readouterr()
    assert list(csv.reader(io.StringIO(out))) == [
        ["model", "params", "published", "GMACs", "published", "acc@1", "check"],
        ["resnet18", "11,689,512", "11,689,512", "1.814", "1.81", "69.758", "ok"],
    ]
    assert f"zoo-bench (tables and plots in {tmp_path})" in err

"""The tables the commands print (``zoo-models``, ``zoo-bench``), in the form their reader needs.

``--format`` picks it: ``table`` (rich, for a terminal), ``md`` (a GitHub Markdown pipe
table), ``csv`` (a header row, then the rows; the title goes to stderr so stdout parses),
or ``auto``, the default: ``table`` on a terminal, ``md`` in a pipe or a file. Markdown
and CSV hold every cell in full.

On a terminal too narrow for the whole table nothing is cut with '…': the least
important columns (each :class:`Column` says when it goes) are left out, one line after
the table names them, and the remaining columns get at least their longest word, so a
model or weights name is never broken. Only when even that does not fit (a terminal
narrower than the names) do cells fold onto the next line.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

FORMATS = ("auto", "table", "md", "csv")


@dataclass(frozen=True)
class Column:
    """A column's header and how it is shown.

    Attributes:
        header: The header cell.
        numeric: Right-aligned (in Markdown too).
        drop: When the column is left out on a narrow terminal: 1 first, then 2, ...;
            ``None``: always shown (the names that say what a row is).
        about: How the note after the table names the column, where the header alone
            is ambiguous (zoo-bench has two columns headed "published").
    """

    header: str
    numeric: bool = False
    drop: int | None = None
    about: str | None = None


@dataclass
class TextTable:
    """A title, columns and rows of text cells: what every format is written from."""

    title: str
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)

    def column(self, index: int) -> list[str]:
        """The header and every cell of column ``index``."""
        return [self.columns[index].header, *(row[index] for row in self.rows)]


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--format`` option both commands take."""
    parser.add_argument(
        "--format", choices=FORMATS, default="auto",
        help="table (rich, fitted to the terminal), md (Markdown), csv; "
             "auto (default): table on a terminal, md in a pipe or file",
    )  # fmt: skip


def resolve_format(fmt: str, console: Console) -> str:
    """``auto`` as ``table`` or ``md``, by whether the console writes to a terminal."""
    if fmt != "auto":
        return fmt
    # isatty, not rich's is_terminal: FORCE_COLOR turns that on, and a pipe still wants plain text.
    isatty = getattr(console.file, "isatty", None)
    return "table" if isatty is not None and isatty() else "md"


def to_markdown(table: TextTable) -> str:
    """The title, then a GitHub Markdown pipe table of every column, cells in full."""

    def cell(text: str) -> str:
        # A '|' would end the cell and a newline the row.
        return text.replace("|", r"\|").replace("\n", " ")

    lines = [
        table.title,
        "",
        "| " + " | ".join(cell(c.header) for c in table.columns) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|",
        *("| " + " | ".join(cell(text) for text in row) + " |" for row in table.rows),
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: TextTable) -> str:
    """A header row, then the rows (the ``csv`` module quotes what needs it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.header for c in table.columns])
    writer.writerows(table.rows)
    return buffer.getvalue()


def _longest_word(texts: list[str]) -> int:
    return max((cell_len(word) for text in texts for word in text.split()), default=1)


def _longest_line(texts: list[str]) -> int:
    return max((cell_len(line) for text in texts for line in text.splitlines()), default=1)


def fit(table: TextTable, width: int) -> tuple[Table, list[Column]]:
    """A rich table of ``table`` no wider than ``width``, and the columns left out to get there.

    Columns go in their ``drop`` order until each remaining one can have its longest
    word; the spare width then goes to the columns, those that need the least of it
    to show every cell on one line first.
    """
    kept = list(range(len(table.columns)))
    words = [_longest_word(table.column(i)) for i in kept]
    lines = [_longest_line(table.column(i)) for i in kept]

    def room() -> int:
        return width - (3 * len(kept) + 1)  # rich's default box: a bar per column and one more, 1 space each side

    for i in sorted((i for i in kept if table.columns[i].drop is not None), key=lambda i: table.columns[i].drop):
        if sum(words[k] for k in kept) <= room():
            break
        kept.remove(i)
    widths: dict[int, int | None] = dict.fromkeys(kept)
    if sum(lines[k] for k in kept) > room() >= sum(words[k] for k in kept):
        # Set the widths here: rich shrinks the widest column first, breaking a name a narrower column could spare.
        widths = {k: words[k] for k in kept}
        spare = room() - sum(widths.values())
        for k in sorted(kept, key=lambda k: lines[k] - words[k]):  # the columns nearest one line a row first
            widths[k] += min(spare, lines[k] - words[k])
            spare -= widths[k] - words[k]
    # Otherwise rich lays it out: everything fits on one line, or nothing can and cells fold.
    rich_table = Table(title=table.title)
    for k in kept:
        column = table.columns[k]
        justify = "right" if column.numeric else "left"
        rich_table.add_column(column.header, justify=justify, overflow="fold", width=widths[k])
    for row in table.rows:
        rich_table.add_row(*(row[k] for k in kept))
    return rich_table, [table.columns[i] for i in range(len(table.columns)) if i not in kept]


def print_table(table: TextTable, fmt: str = "auto", console: Console | None = None) -> None:
    """Print ``table`` to ``console`` (default: stdout) in format ``fmt`` (one of :data:`FORMATS`)."""
    console = console or Console()
    fmt = resolve_format(fmt, console)
    if fmt == "md":
        console.file.write(to_markdown(table))
    elif fmt == "csv":
        print(table.title, file=sys.stderr)
        console.file.write(to_csv(table))
    else:
        rich_table, dropped = fit(table, console.width)
        console.print(rich_table)
        if dropped:
            names = ", ".join(c.about or c.header for c in dropped)
            note = f"Left out to fit {console.width} columns: {names} (--format md shows every column)."
            console.print(note, soft_wrap=True, markup=False, highlight=False)  # one line: the terminal wraps it

"""Strings read from files, made safe to print: control characters shown as ``\\x..`` escapes.

A checkpoint's class names and vocabulary tokens, and the names of a user's files, reach
the terminal and CSV files as they are. A class named ``"\\x1b[2J\\x1b[31mcat"`` would
clear the screen and colour what follows when printed raw (and again when the CSV is
``cat``-ed). :func:`printable` writes every control character, C0 (``\\x00``-``\\x1f``,
tab and newline among them: they would break the one-line, tab-separated output), DEL
(``\\x7f``) and C1 (``\\x80``-``\\x9f``), as its ``\\x..`` escape; printable text,
non-Latin scripts included, is left as it is.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1) replaced by its ``\\x..`` escape."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(text))

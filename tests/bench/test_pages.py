"""The heading every generated benchmark page gets (zoo.bench.pages)."""

from __future__ import annotations

import datetime
import os
import platform
import types
from pathlib import Path

import torch

import zoo.bench.pages
from zoo.bench.pages import machine_description, write_results_page


def test_the_machine_is_named_by_architecture_cores_and_torch_version(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert machine_description() == f"riscv64, 3 CPU cores, torch {torch.__version__}"


def _write_page(page: Path, *date_and_machine: str) -> None:
    intro = ["What was measured.", "Written by: the command below."]
    command, body = "python scripts/bench_x.py --rounds 3", ["| a | b |", "note"]
    write_results_page(page, "Throughput", intro, command, body, *date_and_machine)


def _page(date: str, machine: str) -> str:
    return (
        "# Throughput\n\nWhat was measured.\nWritten by: the command below.\n\n"
        "```bash\npython scripts/bench_x.py --rounds 3\n```\n\n"
        f"on {date}, {machine}.\n\n| a | b |\nnote\n"
    )


def test_a_results_page_is_title_intro_command_date_and_machine_then_the_body(tmp_path, capsys):
    page = tmp_path / "docs" / "benchmarks" / "throughput.md"  # folders not there yet
    _write_page(page, "2001-02-03", "a test machine")
    assert page.read_text() == _page("2001-02-03", "a test machine")
    assert capsys.readouterr().out == f"wrote {page}\n"


def test_a_results_page_is_dated_today_on_this_machine_by_default(tmp_path, monkeypatch):
    today = types.SimpleNamespace(today=lambda: datetime.date(2024, 2, 29))
    monkeypatch.setattr(zoo.bench.pages, "datetime", types.SimpleNamespace(date=today))
    monkeypatch.setattr(zoo.bench.pages, "machine_description", lambda: "riscv64, 3 CPU cores, torch 9.9")
    _write_page(tmp_path / "page.md")
    assert (tmp_path / "page.md").read_text() == _page("2024-02-29", "riscv64, 3 CPU cores, torch 9.9")

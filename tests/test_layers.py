"""The package's layers: what a lower layer may not import (docs/organisation.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zoo

SRC = Path(zoo.__file__).parent

# (package, what it may not import): the rules of docs/organisation.md. The models and
# layers know nothing of training or configuration, the data nothing of the models, the
# tasks nothing of Hydra; only the CLI reads configs.
FORBIDDEN = [
    ("data", "zoo.models"), ("data", "zoo.tasks"), ("data", "zoo.cli"), ("data", "hydra"),
    ("models", "zoo.tasks"), ("models", "zoo.data"), ("models", "zoo.cli"), ("models", "lightning"), ("models", "hydra"),
    ("models", "omegaconf"),
    ("layers", "zoo.models"), ("layers", "lightning"), ("reference", "lightning"), ("reference", "zoo.tasks"),
    ("optim", "lightning"), ("optim", "hydra"), ("tasks", "zoo.cli"), ("tasks", "hydra"), ("tasks", "omegaconf"),
    ("finetune", "zoo.cli"), ("finetune", "hydra"),
]  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("layer", "forbidden"), FORBIDDEN)
def test_a_layer_does_not_import_what_sits_above_it(layer, forbidden):
    offenders = {
        str(path.relative_to(SRC)): sorted(name for name in imported_modules(path) if name == forbidden or name.startswith(forbidden + "."))
        for path in sorted((SRC / layer).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from zoo.models.base import Seq2SeqModel\n    import zoo.tasks as t\n")
    assert imported_modules(module) == {"os", "zoo.models.base", "zoo.tasks"}

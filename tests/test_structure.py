"""The package's structure (docs/organisation.md): what a lower layer may not import, and tests that mirror the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zoo

SRC = Path(zoo.__file__).parent
TESTS = Path(__file__).resolve().parent

# (package, what it may not import): the rules of docs/organisation.md. The models and
# layers know nothing of training or configuration (and the models nothing of torchvision:
# they are written from their papers; its weights come through zoo.weight_import), the data
# nothing of the models, the tasks nothing of Hydra; only the CLI reads configs. Using a
# trained model (inference, export, the inputs record) needs no task module and no Lightning,
# nor does testing one (zoo-eval, the tasks' metrics, the data modules: Lightning takes them
# through zoo.data.lightning only).
FORBIDDEN = [
    ("data", "zoo.models"), ("data", "zoo.tasks"), ("data", "zoo.cli"), ("data", "hydra"),
    ("models", "zoo.tasks"), ("models", "zoo.data"), ("models", "zoo.cli"), ("models", "lightning"), ("models", "hydra"),
    ("models", "omegaconf"), ("models", "torchvision"),
    ("layers", "zoo.models"), ("layers", "lightning"), ("reference", "lightning"), ("reference", "zoo.tasks"),
    ("optim", "lightning"), ("optim", "hydra"), ("tasks", "zoo.cli"), ("tasks", "hydra"), ("tasks", "omegaconf"),
    ("finetune", "zoo.cli"), ("finetune", "hydra"), ("bench", "zoo.cli"), ("bench", "hydra"),
    ("inference.py", "zoo.tasks"), ("inference.py", "lightning"), ("export.py", "zoo.tasks"), ("export.py", "lightning"),
    ("data/inputs.py", "lightning"), ("data/inputs.py", "zoo.data.base"), ("data", "lightning"),
    ("tasks/evaluation.py", "lightning"), ("tasks/evaluation.py", "zoo.tasks.base"), ("tasks/evaluation.py", "zoo.tasks.modules"),
    ("tasks/losses.py", "lightning"), ("cli/eval.py", "lightning"), ("cli/eval.py", "zoo.cli.build"),
    ("cli/eval.py", "zoo.tasks.modules"), ("cli/eval.py", "zoo.data.lightning"),
]  # fmt: skip
# Files a rule above leaves out: the one bridge from the data modules to Lightning.
EXCEPTIONS = {("data", "lightning"): {"data/lightning.py"}}


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
        for path in ([SRC / layer] if layer.endswith(".py") else sorted((SRC / layer).rglob("*.py")))
        if str(path.relative_to(SRC)) not in EXCEPTIONS.get((layer, forbidden), ())
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from zoo.models.base import Seq2SeqModel\n    import zoo.tasks as t\n")
    assert imported_modules(module) == {"os", "zoo.models.base", "zoo.tasks"}


# The test files that prove more than one module, each with why it sits where it does.
ELSEWHERE = {
    "test_docs.py": "the README's promises and the docs site",
    "test_structure.py": "the package's import rules and this layout",
    "test_lock.py": "requirements/lock.txt against pyproject.toml",
    "test_ddp.py": "training on two processes, end to end",
    "test_scaling.py": "the SLURM launcher config and the trainer's shape",
    "test_reliability.py": "a whole run: a non-finite loss, determinism, atomic checkpoints",
    "test_hostile_inputs.py": "bad input through every command, one table",
    "test_resume.py": "a killed run resumed, end to end",
    "test_signals.py": "SIGTERM and Ctrl-C through zoo-train, end to end",
    "test_debug_configs.py": "the configs/debug group on real runs",
    "test_hparams_search.py": "the configs/hparams_search group (Optuna) on a real sweep",
    "test_recipe_options.py": "the options the published recipes need, across data, optim and tasks",
    "test_fundamentals_cli.py": "zoo-train with zoo.reference's optimizer, loss and activation",
    "test_safe_readers.py": "every reader of outside files, across modules",
    "test_bench_tables.py": "scripts/bench_tables.py, which writes two docs pages",
    "finetune/test_finetune_cli.py": "fine-tuning through zoo-train, end to end",
    "reference/test_registered_names.py": "the reference parts as the registries name them",
    "models/test_torchvision_parity.py": "every family against torchvision's, one table",
}


def where_it_belongs(test: Path, tests: Path = TESTS, src: Path = SRC) -> str | None:
    """Why ``test`` (``tests/<folder>/test_<module>[_<topic>].py``) is misplaced, or ``None``:
    ``<folder>`` must be a package of ``src/zoo`` and ``<module>`` one of its modules, a
    sub-package's tests sitting in that sub-package's own folder."""
    relative = test.relative_to(tests)
    package = src.joinpath(*relative.parts[:-1])
    if not (package / "__init__.py").is_file():
        return f"{relative}: src/zoo/{package.relative_to(src).as_posix()} is not a package"
    topic = relative.stem.removeprefix("test_")
    modules = {p.stem: "module" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name: "package" for p in package.iterdir() if (p / "__init__.py").is_file()}
    named = [name for name in modules if topic == name or topic.startswith(name + "_")]
    if not named:
        return f"{relative}: names no module of {package.relative_to(src.parent).as_posix()}"
    if all(modules[name] == "package" for name in named):
        return f"{relative}: belongs under tests/{(relative.parent / named[0]).as_posix()}/"
    return None


def test_every_test_file_sits_under_the_folder_of_the_module_it_names_or_says_why_not():
    tests = sorted(path for path in TESTS.rglob("test_*.py") if path.relative_to(TESTS).as_posix() not in ELSEWHERE)
    assert [problem for path in tests if (problem := where_it_belongs(path))] == []
    assert sorted(name for name in ELSEWHERE if not (TESTS / name).is_file()) == []  # no stale reason


def test_the_layout_check_names_each_kind_of_misplaced_test(tmp_path):
    src, tests = tmp_path / "src" / "zoo", tmp_path / "tests"
    for module in ("zoo/__init__.py", "zoo/files.py", "zoo/data/__init__.py", "zoo/data/text.py"):
        (tmp_path / "src" / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / module).touch()
    cases = {
        "test_files.py": None,
        "test_files_locks.py": None,
        "data/test_text.py": None,
        "test_data_text.py": "test_data_text.py: belongs under tests/data/",
        "test_filesystem.py": "test_filesystem.py: names no module of zoo",
        "seq2seq/test_text.py": "seq2seq/test_text.py: src/zoo/seq2seq is not a package",
    }
    for name in cases:
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).touch()
    assert {name: where_it_belongs(tests / name, tests, src) for name in cases} == cases


# What may use zoo.finetune: it is about training a pretrained model, so only the command that
# trains and the builders of its objects; weights themselves are read through zoo.models.
FINETUNE_USERS = {"cli/build.py", "cli/train.py"}


def test_only_training_imports_the_finetune_package_and_it_imports_eagerly():
    users = {
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
        if path.parent != SRC / "finetune" and any(n == "zoo.finetune" or n.startswith("zoo.finetune.") for n in imported_modules(path))
    }  # fmt: skip
    assert users == FINETUNE_USERS
    tree = ast.parse((SRC / "finetune" / "__init__.py").read_text())
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == []  # no lazy __getattr__

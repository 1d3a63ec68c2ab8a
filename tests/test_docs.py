"""The README is a user guide that keeps its promises, and the docs build into a site."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli
from zoo.bench.pages import generated_section, write_generated_section
from zoo.bench.timing import SPREAD_LIMIT
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_a_short_guide_with_the_two_commands_and_the_three_jobs_near_the_top():
    assert len(README.encode()) <= 15 * 1024
    commands = [line for line in README.splitlines() if re.match(r"^pip install -e .+ && (zoo-train|pytest)", line)]
    assert commands == ['pip install -e . && zoo-train', 'pip install -e ".[test]" && pytest -n auto']  # what .ci/run reads
    top = README[: len(README) // 2]
    for job in ("## Train with overrides", "## Fine-tune a pretrained backbone", "## Reproduce a benchmark table"):
        assert job in top, job


# What the README shows has one home there; the docs include it (pymdownx.snippets sections)
# and other places point to it. Each pattern matches a line of one such table or listing.
ONE_HOME = {
    "the fine-tuning modes table": re.compile(r"^\| `(freeze|partial|gradual)` \|", re.M),
    "the run-folder listing": re.compile(r"^(checkpoints/|csv/metrics\.csv|metrics\.json|curves\.png)\s{3,}\S", re.M),
}


def files_with(pattern: re.Pattern, root: Path = ROOT) -> list[str]:
    """The project's text files (README, docs, sources, configs) in which ``pattern`` matches."""
    candidates = [root / "README.md", *(root / "docs").rglob("*.md"), *(root / "src").rglob("*.py"), *(root / "configs").rglob("*.yaml")]
    return sorted(str(path.relative_to(root)) for path in candidates if path.is_file() and pattern.search(path.read_text()))


def test_each_table_the_readme_shows_is_written_once():
    assert {what: files_with(pattern) for what, pattern in ONE_HOME.items()} == {what: ["README.md"] for what in ONE_HOME}


def test_a_second_copy_of_a_readme_table_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("| `freeze` | the new head only | head 1e-3 |\n")
    (tmp_path / "docs" / "finetuning.md").write_text("intro\n| `partial` | the last stage | stages 1e-5 |\n")
    (tmp_path / "docs" / "other.md").write_text("freeze the `freeze` mode | not a table row\n")
    assert files_with(ONE_HOME["the fine-tuning modes table"], tmp_path) == ["README.md", "docs/finetuning.md"]


def test_every_relative_link_of_the_readme_exists():
    targets = re.findall(r"\]\((?!https?:|#)([^)]+)\)", README)
    assert targets
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing


def test_the_organisation_page_names_every_package_of_src_zoo():
    layers = (ROOT / "docs" / "organisation.md").read_text()
    packages = sorted(p.name for p in (ROOT / "src" / "zoo").iterdir() if (p / "__init__.py").is_file())
    assert packages and [name for name in packages if f"`zoo.{name}`" not in layers] == [], packages


def test_every_generated_page_names_the_command_that_wrote_it():
    pages = sorted((ROOT / "docs" / "benchmarks").glob("*.md"))
    assert {p.name for p in pages} >= {"default-run.md", "models.md", "digits.md", "seq2seq.md"}
    for page in pages:
        assert re.search(r"```bash\n(python scripts/\S+\.py|zoo-bench)[^`]*```", page.read_text()), page.name


def test_the_default_run_prints_what_the_readme_promises(tmp_path):
    """``zoo-train`` with nothing but its run folder: the README quotes this line at seed 42,
    run as a user runs it, on torch's default threads (not the one thread a test worker sets)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = run_cli("zoo-train", f"hydra.run.dir={tmp_path}", env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["seed"] == 42 and record["test_weights"] == "last" and record["epochs"] == 20
    assert record["test"]["test/acc"] >= 0.99, record
    line = re.search(r"\[zoo\]\[INFO\] - (test/acc \S+, test/acc_top5 \S+, test/loss \S+ \(last weights\))", result.stdout)
    assert line, result.stdout[-2000:]
    assert f"test/acc {record['test']['test/acc']:.4f}," in line.group(1)
    output = result.stdout + result.stderr
    assert "Tip:" not in output and "LeafSpec" not in output  # Lightning's adverts and known noise are silenced


def test_the_docs_build_into_a_site_without_broken_links(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    resnet = (tmp_path / "site" / "models" / "resnet" / "index.html").read_text()
    assert "Deep Residual Learning for Image Recognition" in resnet  # the module docstring, rendered
    assert 'id="zoo.models.resnet.ResNet"' in resnet  # and the module's API
    # README's sections, included where the docs show them
    assert "csv/metrics.csv" in (tmp_path / "site" / "training" / "index.html").read_text()
    assert "<code>gradual</code>" in (tmp_path / "site" / "finetuning" / "index.html").read_text()


def test_the_organisation_pages_example_model_registers_and_keeps_the_contract(monkeypatch):
    import torch

    from zoo.models import MODELS, get_model

    page = (ROOT / "docs" / "organisation.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", page, re.S)
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # the example's name, for this test only
    exec(compile(example, "docs/organisation.md", "exec"), {"__name__": "zoo.models.tinycnn"})
    net = get_model("tinycnn", num_classes=3)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    net.reset_classifier(5)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert [name for name, _ in net.stages()] == ["conv", "head"]
    from zoo.models.weights import list_weights, unregister_weights

    try:
        (weights,) = list_weights("tinycnn")
        assert (weights.name, weights.preprocessing.mean, weights.metrics) == ("tinycnn.digits", (0.3,), {"acc@1": 95.0})
    finally:
        unregister_weights("tinycnn", "digits")


# --------------------------------------------------------------------------- README's numbers: one home each


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _section(name: str) -> str:
    start, end = generated_section(README, name)
    return README[start:end].rstrip("\n")


def test_the_readmes_measured_numbers_are_rendered_from_the_results_files_that_hold_them(tmp_path):
    """README.md's paragraphs of measured figures are written by the scripts from their results
    files (benchmarks/default-run.json, benchmarks/digits/, benchmarks/seq2seq/); so is the
    default run's page. A number edited by hand in either place fails here."""
    default = _script("bench_default")
    record = json.loads((ROOT / "benchmarks" / "default-run.json").read_text())
    assert _section("default-run") == default.readme_section(record)
    default.write_page(tmp_path / "default-run.md", record)
    assert (tmp_path / "default-run.md").read_text() == (ROOT / "docs" / "benchmarks" / "default-run.md").read_text()
    assert _section("trained-results") == _script("bench_tables").readme_section()


def test_no_measured_number_stands_in_the_readme_outside_a_generated_section():
    text = README
    for name in re.findall(r"^<!-- generated:([\w-]+)", README, re.M):
        start, end = generated_section(text, name)
        text = text[:start] + text[end:]
    measured = re.compile(r"\d+(?:\.\d+)?\s?%|\b\d+(?:\.\d+)?\s?(?:s|ms|min|minutes|seconds|hours)\b|\b0\.\d{3,}\b")
    # Settings, not measurements, each checked against where it is set.
    settings = {"10%": 100 * SPREAD_LIMIT}  # zoo-bench's unsteady-rounds warning
    found = [m.group(0) for m in measured.finditer(text)]
    assert [f for f in found if f not in settings] == []
    assert all(float(f.rstrip("%")) == value for f, value in settings.items() if f in found)


def test_a_generated_section_is_replaced_whole_and_a_missing_one_is_refused(tmp_path, capsys):
    page = tmp_path / "README.md"
    page.write_text("a\n<!-- generated:x by a script -->\nold\nlines\n<!-- /generated:x -->\nb\n")
    write_generated_section(page, "x", "new\n")
    assert page.read_text() == "a\n<!-- generated:x by a script -->\nnew\n<!-- /generated:x -->\nb\n"
    with pytest.raises(ZooError, match="no section 'y'"):
        write_generated_section(page, "y", "z")
    assert page.read_text().count("new") == 1

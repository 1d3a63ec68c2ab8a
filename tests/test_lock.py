"""requirements/lock.txt satisfies pyproject.toml: every package the project, the ``test``
extra's closure and the build backend name is pinned, inside its range, with a sha256 hash;
the compromised lightning releases are not in it; scripts/lock.py's Docker subset drops
only what the CPU build of torch does without. Offline: the files are only read."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
# The lock's target: CPython 3.11 on Linux x86_64 (markers of a requirement are read for it).
TARGET = {
    "python_version": "3.11", "python_full_version": "3.11.7", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
}
# GHSA-w37p-236h-pfx3: these wheels carry a credential-stealing payload, whatever pyproject says.
COMPROMISED = {"lightning": {"2.6.2", "2.6.3"}, "pytorch-lightning": {"2.6.2", "2.6.3"}}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;[^\\]*)?\s*\\?$")
_HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


def parse_lock(text: str) -> tuple[dict[str, str], list[str]]:
    """The lock's pins (canonical name -> version) and what is wrong with its lines."""
    pins: dict[str, str] = {}
    problems: list[str] = []
    current, hashes = None, 0

    def close() -> None:
        if current is not None and hashes == 0:
            problems.append(f"{current}: no --hash=sha256")

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _HASH.match(line):
            if current is None:
                problems.append(f"line {number}: a hash outside an entry")
            hashes += 1
            continue
        match = _PIN.match(line)
        if not match:
            problems.append(f"line {number}: not a `name==version` pin nor a sha256 hash: {line.strip()}")
            continue
        close()
        current, hashes = canonicalize_name(match.group(1)), 0
        if current in pins:
            problems.append(f"{current}: pinned twice")
        pins[current] = match.group(2)
    close()
    return pins, problems


def required(pyproject: dict, extra: str = "test") -> list[Requirement]:
    """The dependencies, the closure of ``extra`` (``zoo[export]`` inside it followed) and the
    build backend, each as a Requirement whose marker holds on the lock's target."""
    project = pyproject["project"]
    self_name = canonicalize_name(project["name"])
    found = [Requirement(r) for r in [*project["dependencies"], *pyproject["build-system"]["requires"]]]
    extras, seen = [extra], set()
    while extras:
        name = extras.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in project["optional-dependencies"][name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == self_name:
                extras.extend(requirement.extras)
            else:
                found.append(requirement)
    return [r for r in found if r.marker is None or r.marker.evaluate(TARGET)]


def problems(pyproject: dict, lock_text: str) -> list[str]:
    """Everything that keeps the lock from being a hash-pinned install of pyproject's ranges."""
    pins, found = parse_lock(lock_text)
    for requirement in required(pyproject):
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(Version(pins[name]), prereleases=True):
            found.append(f"{requirement}: the lock pins {pins[name]}")
    for name, versions in COMPROMISED.items():
        if pins.get(name) in versions:
            found.append(f"{name}=={pins[name]}: a compromised release")
    return found


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def lock_text() -> str:
    return LOCK.read_text()


@pytest.fixture(scope="module")
def lock_script():
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_lock_pins_every_requirement_inside_its_range_with_hashes(pyproject, lock_text):
    assert problems(pyproject, lock_text) == []
    names = {canonicalize_name(r.name) for r in required(pyproject)}
    # The closure was followed: a package of each extra the test extra pulls in, and the backend.
    assert {"torch", "onnx", "hydra-optuna-sweeper", "mlflow-skinny", "wandb", "mkdocs",
            "hydra-submitit-launcher", "pytest", "hatchling"} <= names
    # What hatchling builds `pip install --no-build-isolation -e .` with (docs/reliability.md).
    assert "editables" in parse_lock(lock_text)[0]


def _entry(text: str, name: str) -> str:
    """The lines of ``name``'s entry in the lock."""
    match = re.search(rf"^{re.escape(name)}==.*?(?=^\S|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, name
    return match.group(0)


def _wanted_by(entry: str) -> set[str]:
    """The packages an entry's ``# via`` note names (``# via a`` or ``# via`` then ``#   a`` lines)."""
    notes = re.findall(r"^[ \t]+#[ \t]*(.*)$", entry, flags=re.MULTILINE)
    names = [note.removeprefix("via").strip() for note in notes]
    return {canonicalize_name(name) for name in names if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)}


def _repin(text: str, name: str, version: str) -> str:
    return re.sub(rf"^{re.escape(name)}==\S+", f"{name}=={version}", text, count=1, flags=re.MULTILINE)


@pytest.mark.parametrize(
    "plant, expected",
    [
        (lambda t: _repin(t, "hydra-core", "1.3.6"), "hydra-core<1.4,>=1.3.7: the lock pins 1.3.6"),
        (lambda t: _repin(t, "hydra-core", "1.4.0"), "hydra-core<1.4,>=1.3.7: the lock pins 1.4.0"),
        (lambda t: _repin(t, "onnx", "1.20.1"), "onnx>=1.21.0: the lock pins 1.20.1"),
        (lambda t: _repin(t, "lightning", "2.6.3"), "lightning!=2.6.2,!=2.6.3,>=2.6.6: the lock pins 2.6.3"),
        (lambda t: _repin(t, "pytorch-lightning", "2.6.2"), "pytorch-lightning==2.6.2: a compromised release"),
        (lambda t: t.replace(_entry(t, "mlflow-skinny"), ""), "mlflow-skinny>=3.18.0: not in the lock"),
        (lambda t: t.replace(_entry(t, "hatchling"), ""), "hatchling>=1.24: not in the lock"),
        (
            lambda t: t.replace(_entry(t, "safetensors"), "safetensors==0.8.0\n    # via zoo\n"),
            "safetensors: no --hash=sha256",
        ),
        (lambda t: t + "requests>=2\n", "not a `name==version` pin"),
        (lambda t: t + "--hash=sha256:" + "0" * 64 + "\n", "not a `name==version` pin"),
        (lambda t: t + _entry(t, "rich"), "rich: pinned twice"),
    ],
    ids=["below-floor", "above-cap", "onnx-advisory", "excluded-version", "compromised-transitive",
         "missing-extra-package", "missing-build-backend", "no-hash", "range-not-pin", "stray-hash",
         "duplicate"],
)
def test_a_planted_fault_in_the_lock_is_reported(pyproject, lock_text, plant, expected):
    planted = plant(lock_text)
    assert planted != lock_text
    found = problems(pyproject, planted)
    assert any(expected in problem for problem in found), found


def test_a_requirement_pyproject_adds_without_relocking_is_reported(pyproject, lock_text):
    stale = {**pyproject, "project": {**pyproject["project"]}}
    stale["project"]["dependencies"] = [*pyproject["project"]["dependencies"], "einops>=0.8"]
    assert problems(stale, lock_text) == ["einops>=0.8: not in the lock"]


def test_the_docker_subset_drops_exactly_torch_torchvision_and_the_cuda_runtime(lock_script, lock_text):
    pins, _ = parse_lock(lock_text)
    subset_pins, subset_problems = parse_lock(lock_script.without_cuda(lock_text))
    assert subset_problems == []  # every kept entry keeps its hashes
    dropped = set(pins) - set(subset_pins)
    assert {"torch", "torchvision", "triton"} <= dropped
    assert all(name in {"torch", "torchvision", "triton"} or name.startswith(("nvidia-", "cuda-")) for name in dropped)
    assert {name: pins[name] for name in subset_pins} == subset_pins
    # Nothing dropped is wanted by a package the image keeps: each is pulled in by torch or by
    # another dropped package only (the lock's `# via` notes say who wants what).
    for name in dropped - {"torch", "torchvision"}:
        wanted_by = _wanted_by(_entry(lock_text, name))
        assert wanted_by and wanted_by <= dropped, (name, wanted_by)
    # The CPU wheels' own requirements stay: torch's pure-Python dependencies are kept.
    assert {"filelock", "sympy", "networkx", "jinja2", "fsspec", "setuptools", "typing-extensions"} <= set(subset_pins)


def test_version_of_reads_the_locked_pin(lock_script, lock_text):
    pins, _ = parse_lock(lock_text)
    assert lock_script.version_of(lock_text, "torch") == pins["torch"]
    assert lock_script.version_of(lock_text, "PyYAML") == pins["pyyaml"]
    with pytest.raises(SystemExit, match="einops is not in"):
        lock_script.version_of(lock_text, "einops")


def _dockerfile_commands(text: str) -> list[str]:
    """The shell commands of the Dockerfile's RUN lines (comments dropped, `\\` lines joined, `&&` split)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    runs = [line.removeprefix("RUN ").strip() for line in joined.splitlines() if line.startswith("RUN ")]
    return [" ".join(command.split()) for run in runs for command in run.split("&&")]


def test_the_dockerfile_installs_the_lock_with_hashes_and_nothing_unpinned():
    commands = _dockerfile_commands((ROOT / "Dockerfile").read_text())
    installs = [c for c in commands if c.startswith("pip install")]
    assert "python scripts/lock.py --without-cuda > /tmp/lock-cpu.txt" in commands
    assert any("--require-hashes" in c and "-r /tmp/lock-cpu.txt" in c for c in installs), installs
    # No install takes a dependency from an index: the CPU torch pair is pinned to the lock's
    # versions, and the lock and the project are installed without resolving or build isolation.
    assert all("--no-deps" in c for c in installs), installs
    torch_pair = [c for c in installs if "download.pytorch.org" in c]
    assert len(torch_pair) == 1
    assert '"torch==$(python scripts/lock.py --version-of torch)+cpu"' in torch_pair[0]
    assert '"torchvision==$(python scripts/lock.py --version-of torchvision)+cpu"' in torch_pair[0]
    assert all("--no-build-isolation" in c for c in installs if c not in torch_pair), installs

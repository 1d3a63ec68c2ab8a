#!/usr/bin/env bash
# Mutation testing of the numeric core with mutmut: attention, recurrent cells, decoding,
# the lecture's reference optimizers and losses, and the fine-tuning freezing rules
# ([tool.mutmut] in pyproject.toml names the files and the tests that guard them).
# Each mutant (an operator, constant or argument changed) runs the tests that cover its
# function; a mutant no test notices "survives". Not part of CI: a few minutes on 2 cores.
#
#   pip install -e ".[test,mutation]" && bash scripts/mutation.sh
#
# Runs in a throw-away copy of the working tree, so the checkout is never touched; prints
# the score per file and in all, and the surviving mutants (reviewed in docs/testing.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v mutmut >/dev/null || { echo 'mutmut is not installed: pip install -e ".[mutation]"' >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -C "$root" --exclude=./.git --exclude=./mutants --exclude=./outputs --exclude=./multirun \
    --exclude=./site --exclude='*.egg-info' -cf - . | tar -C "$work" -xf -
cd "$work"
# mutmut forks one child per mutant from a process that has imported torch: OpenMP's
# thread pool does not survive fork (the children hang), so the tests run on one thread.
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
mutmut run >mutmut.log 2>&1 || { tail -n 30 mutmut.log >&2; exit 1; }

python - <<'PY'
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

# Survived: no test noticed; no tests: no test runs the function. Every other status
# (killed, timeout, segfault) means a test stopped the mutant.
MISSED = ("survived", "no tests")
total = Counter()
print(f"{'file':34s} {'mutants':>8s} {'caught':>7s} {'survived':>9s} {'untested':>9s} {'score':>7s}")
for path in sorted(Path("mutants").rglob("*.py.meta")):
    statuses = Counter(status_by_exit_code[code] for code in json.loads(path.read_text())["exit_code_by_key"].values())
    total.update(statuses)
    n, missed = sum(statuses.values()), sum(statuses[s] for s in MISSED)
    name = str(path.relative_to("mutants/src")).removesuffix(".meta")
    print(f"{name:34s} {n:8d} {n - missed:7d} {statuses['survived']:9d} {statuses['no tests']:9d} {100 * (n - missed) / n:6.1f}%")
n, missed = sum(total.values()), sum(total[s] for s in MISSED)
print(f"{'all':34s} {n:8d} {n - missed:7d} {total['survived']:9d} {total['no tests']:9d} {100 * (n - missed) / n:6.1f}%")
PY
echo
echo "Mutants no test caught, each with its change:"
for name in $(mutmut results 2>/dev/null | awk -F': ' '$2 == "survived" || $2 == "no tests" {print $1}'); do
  mutmut show "$name" 2>/dev/null | sed -n '/^@@/,$p' | sed "1s|^|# $name\n|"
done

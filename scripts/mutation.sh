#!/usr/bin/env bash
# Mutation testing of the numeric core with mutmut: attention, recurrent cells, decoding,
# the lecture's reference optimizers and losses, and the fine-tuning freezing rules
# ([tool.mutmut] in pyproject.toml names the files and the tests that guard them).
# Each mutant (an operator, constant or argument changed) runs the tests that cover its
# function; a mutant that no test notices survives. Not part of CI: about 10 minutes on 2 cores.
#
#   pip install -e ".[test,mutation]" && bash scripts/mutation.sh > docs/mutation.md
#
# Runs in a throw-away copy of the working tree (the checkout is never touched) and prints
# a Markdown page: the score per file and in all, then every surviving mutant's change.
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
start=$SECONDS
mutmut run >mutmut.log 2>&1 || { tail -n 30 mutmut.log >&2; exit 1; }
minutes=$(( (SECONDS - start + 59) / 60 ))

cat <<MD
# Mutation score of the numeric core

Written by \`bash scripts/mutation.sh > docs/mutation.md\` on $(date -u +%Y-%m-%d)
($(python -c 'import os; print(os.cpu_count())') CPU cores, torch $(python -c 'import torch; print(torch.__version__)'),
mutmut $(mutmut --version | awk '{print $NF}'), ${minutes} min). The files and the tests run against them are in
\`[tool.mutmut]\` of \`pyproject.toml\`; the survivors reviewed: [Testing](testing.md#the-score-and-the-survivors).

MD
python - <<'PY'
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

# Survived: no test noticed; no tests: no test runs the function. Every other status
# (killed, timeout, segfault) means a test stopped the mutant.
MISSED = ("survived", "no tests")
total = Counter()
print("| file | mutants | caught | survived | not run by a test | score |")
print("|---|---:|---:|---:|---:|---:|")
for path in sorted(Path("mutants").rglob("*.py.meta")):
    statuses = Counter(status_by_exit_code[code] for code in json.loads(path.read_text())["exit_code_by_key"].values())
    total.update(statuses)
    n, missed = sum(statuses.values()), sum(statuses[s] for s in MISSED)
    name = "src/" + str(path.relative_to("mutants/src")).removesuffix(".meta")
    print(f"| `{name}` | {n} | {n - missed} | {statuses['survived']} | {statuses['no tests']} | {100 * (n - missed) / n:.1f}% |")
n, missed = sum(total.values()), sum(total[s] for s in MISSED)
print(f"| **all** | {n} | {n - missed} | {total['survived']} | {total['no tests']} | **{100 * (n - missed) / n:.1f}%** |")
PY
echo
echo "## The mutants no test caught"
echo
for name in $(mutmut results 2>/dev/null | awk -F': ' '$2 == "survived" || $2 == "no tests" {print $1}'); do
  printf '`%s`\n\n```diff\n' "$name"
  mutmut show "$name" 2>/dev/null | sed -n '/^@@/,$p' | grep -E '^[-+]' | grep -vE '^(---|\+\+\+)'
  printf '```\n\n'
done

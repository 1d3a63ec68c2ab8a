#!/usr/bin/env bash
# Mutation testing with mutmut: each mutant (an operator, constant or argument changed) runs
# the tests that cover its function; a mutant that no test notices survives.
#
#   pip install -e ".[test,mutation]"
#   bash scripts/mutation.sh core                  # run the numeric core, ~10 min on 2 cores
#   bash scripts/mutation.sh surface               # run the run surface, file by file
#   bash scripts/mutation.sh surface src/zoo/files.py   # one file of it
#   bash scripts/mutation.sh page > docs/mutation.md    # the score page, from the kept results
#   bash scripts/mutation.sh survivors [core|surface]   # every mutant no test caught, with its change
#
# core: the files [tool.mutmut] in pyproject.toml names (attention, recurrent layers,
# decoding, reference optimizers and losses, freezing), in one mutmut run.
# surface: the files of [tool.zoo.mutation-surface] (locks and atomic writes, checkpoints,
# loggers, callbacks, sweeps, benchmarks, the CLI's builders, inference, export, weights),
# one mutmut run per file with only the tests listed for it; each run stops after
# MUTATION_MINUTES (default 20) and the mutants it had no time for are counted apart,
# outside the score.
# A run keeps its results in ${MUTATION_RESULTS:-mutation-results}/<suite>/ (git-ignored):
# a later run replaces the files it runs, so a suite can be measured file by file over
# several sessions; `page` and `survivors` read that folder and run nothing. The run itself
# prints its suite's table.
# Lines that call the logger (log.debug/info/warning, logging.getLogger(...).warning) are not mutated: their wording is for
# people; the values a test needs are checked where they are computed. Error messages are
# mutated: they are what a user reads and the tests check their key and value.
# Not part of CI. Runs in a throw-away copy of the working tree (the checkout is never
# touched).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
usage="usage: scripts/mutation.sh core | surface [FILE...] | page | survivors [core|surface]"
suite="${1:-core}"
shift || true
command -v mutmut >/dev/null || { echo 'mutmut is not installed: pip install -e ".[mutation]"' >&2; exit 1; }
cap="${MUTATION_MINUTES:-20}"
results="$(cd "$root" && mkdir -p "${MUTATION_RESULTS:-mutation-results}" && cd "${MUTATION_RESULTS:-mutation-results}" && pwd)"

# The score table of one suite's kept results ($1: its folder), one row a file.
table() {
  python - "$1" <<'PY'
import datetime
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

# Caught: a test failed, timed out or crashed on the mutant. Missed: it survived, or no
# test runs its function. Not run: the file's time cap came first (outside the score).
MISSED = ("survived", "no tests")
NOT_RUN = ("not checked", "check was interrupted by user")
folder = Path(sys.argv[1]) / "mutants"
total = Counter()
print("| file | measured | mutants | caught | survived | not run by a test | not run (time cap) | score |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for path in sorted(folder.rglob("*.py.meta")):
    statuses = Counter(status_by_exit_code[code] for code in json.loads(path.read_text())["exit_code_by_key"].values())
    total.update(statuses)
    skipped = sum(statuses[s] for s in NOT_RUN)
    n, missed = sum(statuses.values()), sum(statuses[s] for s in MISSED)
    name = "src/" + str(path.relative_to(folder / "src")).removesuffix(".meta")
    score = f"{100 * (n - skipped - missed) / (n - skipped):.1f}%" if n > skipped else "-"
    measured = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()
    print(f"| `{name}` | {measured} | {n} | {n - skipped - missed} | {statuses['survived']} | {statuses['no tests']} | {skipped} | {score} |")
n, missed, skipped = sum(total.values()), sum(total[s] for s in MISSED), sum(total[s] for s in NOT_RUN)
score = f"{100 * (n - skipped - missed) / (n - skipped):.1f}%" if n > skipped else "-"
print(f"| **all** | | {n} | {n - skipped - missed} | {total['survived']} | {total['no tests']} | {skipped} | **{score}** |")
PY
}

case "$suite" in
  core | surface) ;;
  page)
    cat <<'MD'
# Mutation score

Written by `bash scripts/mutation.sh page > docs/mutation.md` from the results the runs kept
(`bash scripts/mutation.sh core`, `bash scripts/mutation.sh surface [FILE...]`). What is
mutated, the rules, and every surviving mutant reviewed by group: [Testing](testing.md#mutation-testing).
The full list of survivors with their changes is printed on demand, from the same results:
`bash scripts/mutation.sh survivors [core|surface]`.
MD
    for kept in core surface; do
      [ -f "$results/$kept/run.txt" ] || continue
      title="The numeric core"
      [ "$kept" = surface ] && title="The run surface"
      printf '\n## %s\n\n%s\n\n' "$title" "$(cat "$results/$kept/run.txt")"
      table "$results/$kept"
    done
    exit 0 ;;
  survivors)
    for kept in ${1:-core surface}; do
      cat "$results/$kept"/survivors/*.md 2>/dev/null || true
    done
    exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
results="$results/$suite"
mkdir -p "$results"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -C "$root" --exclude=./.git --exclude=./mutants --exclude=./mutation-results --exclude=./outputs --exclude=./multirun \
    --exclude=./site --exclude='*.egg-info' -cf - . | tar -C "$work" -xf -
cd "$work"
ln -s "$results" results
mkdir -p results/survivors
# mutmut forks one child per mutant from a process that has imported torch: OpenMP's
# thread pool does not survive fork (the children hang), so the tests run on one thread.
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
start=$SECONDS

# The runs: "core" one run as configured; "surface" one per file, [tool.mutmut] rewritten
# in this copy to that file and its tests.
runs=$(python - "$suite" "$@" <<'PY'
import sys, tomllib
suite, chosen = sys.argv[1], sys.argv[2:]
if suite == "core":
    print("core")
    sys.exit()
table = tomllib.load(open("pyproject.toml", "rb"))["tool"]["zoo"]["mutation-surface"]
unknown = [f for f in chosen if f not in table]
if unknown:
    sys.exit(f"not in [tool.zoo.mutation-surface]: {', '.join(unknown)}")
print("\n".join(chosen or table))
PY
)
python - <<'PY'
import re
from pathlib import Path
config = Path("pyproject.toml")
text = config.read_text()
rule = r"""do_not_mutate_patterns = ['\blog(ging\.getLogger\([^)]*\))?\.(debug|info|warning)\(']""" + "\n"
config.write_text(text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + rule, 1))
PY

for run in $runs; do
  rm -rf mutants
  if [ "$run" != core ]; then
    python - "$run" <<'PY'
import json, re, sys, tomllib
from pathlib import Path
source = sys.argv[1]
config = Path("pyproject.toml")
text = config.read_text()
tests = tomllib.loads(text)["tool"]["zoo"]["mutation-surface"][source]
for key, value in (("source_paths", [source]), ("pytest_add_cli_args_test_selection", tests)):
    text, n = re.subn(rf"^{key} = \[.*?\]\n", f"{key} = {json.dumps(value)}\n", text, count=1, flags=re.M | re.S)
    assert n == 1, key
config.write_text(text)
PY
  fi
  echo "::: $run" >&2
  rc=0
  log="results/$(echo "$run" | tr / _).log"
  timeout --signal=INT --kill-after=60 "${cap}m" mutmut run >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then  # the next file still runs; this one is left out of the page
    echo "    mutmut failed on $run (rc $rc); the end of its log:" >&2
    tail -n 15 "$log" >&2
    continue
  fi
  [ "$rc" -eq 124 ] && echo "    stopped after ${cap} min" >&2
  find mutants -name '*.py.meta' -exec cp --parents {} results/ \;
  for name in $(mutmut results 2>/dev/null | awk -F': ' '$2 == "survived" || $2 == "no tests" {print $1}'); do
    printf '`%s`\n\n```diff\n' "$name"
    mutmut show "$name" 2>/dev/null | sed -n '/^@@/,$p' | grep -E '^[-+]' | grep -vE '^(---|\+\+\+)' || true
    printf '```\n\n'
  done >"results/survivors/$(echo "$run" | tr / _).md"
done
minutes=$(( (SECONDS - start + 59) / 60 ))

# What the page says of the last run, then this suite's table.
versions="$(python -c 'import os, torch; print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}")'), mutmut $(mutmut --version | awk '{print $NF}')"
cap_note=""
[ "$suite" = surface ] && cap_note=", at most ${cap} min a file"
echo "Last run: $(date -u +%Y-%m-%d), \`bash scripts/mutation.sh ${suite}${*:+ $*}\`, ${minutes} min${cap_note} (${versions}); each row is dated by its own run. The files and the tests run against them: \`[tool.mutmut]\` and \`[tool.zoo.mutation-surface]\` in \`pyproject.toml\`." >results/run.txt
table results

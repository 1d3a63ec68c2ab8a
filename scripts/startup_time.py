"""Start-up time of each command line against ``python -c 'import torch'``, measured in one run.

    python scripts/startup_time.py [--repeats 7] > docs/benchmarks/startup.md

For each command: ``--help``, and a refused value (one ``Error:`` line, exit 1) where the
command takes one, each as a fresh process; the median and the worst of ``--repeats``
runs, and the median's ratio to importing torch measured in the same run. Prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
CASES = [
    ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
    ("python -c 'import lightning'", [sys.executable, "-c", "import lightning"]),
    *[(f"zoo-{c} --help", [str(BIN / f"zoo-{c}"), "--help"]) for c in ("train", "eval", "predict", "translate", "export")],
    ("zoo-train data.batch_size=0 (refused)", [str(BIN / "zoo-train"), "data.batch_size=0"]),
    ("zoo-predict (no ckpt_path: refused)", [str(BIN / "zoo-predict")]),
    ("zoo-models lenet5", [str(BIN / "zoo-models"), "lenet5"]),
]


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for _, command in CASES:  # warm the file cache once
        seconds(command)
    times = {name: [] for name, _ in CASES}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every case alike
        for name, command in CASES:
            times[name].append(seconds(command))
    torch_median = statistics.median(times[CASES[0][0]])
    print("# Command start-up time\n")
    print(f"```bash\npython scripts/startup_time.py --repeats {args.repeats} > docs/benchmarks/startup.md\n```\n")
    print(f"Measured on {datetime.date.today()}: Python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, each command a fresh process, {args.repeats} runs each, interleaved.\n")  # fmt: skip
    print("`--help`, `--cfg job` and a refused value answer before torch is imported (`zoo.cli.launch`"
          " composes the config first, `zoo.cli.config` checks it); a training run then pays for torch and"
          " Lightning. `zoo-models` builds every model on the meta device, which needs torch but not Lightning.\n")
    print("| command | median (s) | worst (s) | median / import torch |")
    print("|---|---|---|---|")
    for name, _ in CASES:
        median = statistics.median(times[name])
        print(f"| `{name}` | {median:.2f} | {max(times[name]):.2f} | {median / torch_median:.2f} |")


if __name__ == "__main__":
    main()

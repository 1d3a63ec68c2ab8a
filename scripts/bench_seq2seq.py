#!/usr/bin/env python
"""Benchmark of the seq2seq recipe: test exact-match and wall time of
``zoo-train experiment=seq2seq_gru_dates`` (GRU encoder-decoder with Bahdanau attention on
human-written dates -> ISO), one fresh process per seed, median over the seeds.

    python scripts/bench_seq2seq.py [--seeds 0,1,2] [--threads 1] [--experiment transformer_small_dates] [overrides ...]

Target: median test exact-match >= 0.99 in a few minutes on 2 CPU cores. Extra
arguments are passed to zoo-train (e.g. ``model=seq2seq_lstm``). ``--threads`` sets
OMP_NUM_THREADS for the runs: for these small recurrent networks one thread is as fast
as two on an idle machine and far faster on a busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    parser.add_argument("--experiment", default="seq2seq_gru_dates", help="the recipe in configs/experiment/")
    parser.add_argument("overrides", nargs="*", help="further zoo-train overrides")
    args = parser.parse_args()
    zoo_train = Path(sys.executable).parent / "zoo-train"
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    matches, bleus, secs = [], [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            subprocess.run(
                [str(zoo_train), f"experiment={args.experiment}", f"seed={seed}", f"hydra.run.dir={run_dir}",
                 "callbacks.progress_bar=none", *args.overrides],
                check=True, capture_output=True, env=env,
            )  # fmt: skip
            secs.append(time.perf_counter() - start)
            record = json.loads((Path(run_dir) / "metrics.json").read_text())
        matches.append(record["test"]["test/exact_match"])
        bleus.append(record["test"]["test/bleu"])
        print(f"seed {seed}: test exact-match {matches[-1]:.4f}, BLEU {bleus[-1]:.4f}, "
              f"{record['epochs']} epochs, {secs[-1]:.0f} s start to exit", flush=True)
    print(f"median test exact-match {statistics.median(matches):.4f} (target >= 0.990); "
          f"median BLEU {statistics.median(bleus):.4f}; median time {statistics.median(secs):.0f} s")


if __name__ == "__main__":
    main()

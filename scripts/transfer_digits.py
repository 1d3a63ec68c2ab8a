#!/usr/bin/env python
"""Transfer learning on the bundled digits, as a Markdown table.

    python scripts/transfer_digits.py [--pretrain-epochs 12] [--seeds 42 43 44] [--threads 1]
                                      [--lecture-rates] [--weights PRETRAINED.ckpt]

1. Pretrain a small-input ResNet-18 on digits 0-4 (all their training images), each
   image in its 8 orientations, each orientation of each digit a class of its own
   (``data.orientations=8``: 40 classes; docs/experiments/transfer-digits.md).
2. Fine-tune it on digits 5-9 with 10 training images per class in each mode of
   ``configs/finetune`` (freeze, partial, full, gradual), and train the same network
   from scratch on the same 50 images.

Every run is ``zoo-train experiment=resnet18_digits_transfer ...`` (``configs/experiment/
resnet18_digits_transfer.yaml``), tested on the fixed test split of digits 5-9 (180 images).
The experiment's learning rates are larger than the lecture's (see the config for why);
``--lecture-rates`` runs each mode at its ``configs/finetune`` rates instead, and
``--weights`` reuses a pretrained checkpoint. Prints one row per mode: parameters
trained, test accuracy (mean ± std over ``--seeds``) and wall time from start to exit
(which includes ~10 s of start-up per run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

MODES: dict[str, list[str]] = {
    "scratch": ["finetune=none"],
    "freeze": ["finetune=freeze"],
    "partial": ["finetune=partial"],
    "full": ["finetune=full"],
    "gradual": ["finetune=gradual"],
}
# configs/finetune/<mode>.yaml, which the experiment's rates override.
LECTURE_RATES: dict[str, list[str]] = {
    "freeze": ["finetune.lr_head=1e-3"],
    "partial": ["finetune.lr_backbone=1e-5", "finetune.lr_head=1e-3"],
    "full": ["finetune.lr_backbone=1e-6", "finetune.lr_head=1e-3"],
    "gradual": ["finetune.lr_backbone=1e-5", "finetune.lr_head=1e-3"],
}
QUIET = ["callbacks.progress_bar=none", "trainer.enable_model_summary=false"]


def zoo_train(overrides: list[str], run_dir: Path, env: dict[str, str]) -> tuple[dict, float]:
    """Run zoo-train; its metrics.json record and the seconds it took."""
    zoo = str(Path(sys.executable).parent / "zoo-train")
    command = [zoo, "experiment=resnet18_digits_transfer", *overrides, *QUIET, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), seconds


def sign_flip_p(diffs: list[float], draws: int = 100_000) -> float:
    """Two-sided p-value of the paired differences under "no effect": how often a random
    sign on each difference gives a mean at least as far from zero (Monte Carlo, seeded)."""
    d = torch.tensor(diffs, dtype=torch.float64)
    signs = torch.randint(0, 2, (draws, len(d)), generator=torch.Generator().manual_seed(0)) * 2 - 1
    return ((signs * d).mean(1).abs() >= d.mean().abs() - 1e-9).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--lecture-rates", action="store_true", help="the lecture's rates, not the experiment's")
    parser.add_argument("--weights", default=None, help="a pretrained checkpoint to reuse instead of pretraining")
    parser.add_argument("--out", default="outputs/transfer_digits")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="which rows to run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each with --threads threads)")
    parser.add_argument("--override", nargs="*", default=[], help="zoo-train overrides for every run on digits 5-9")
    parser.add_argument("--pretrain-override", nargs="*", default=[], help="zoo-train overrides for the pretraining")
    parser.add_argument(
        "--finetune-override", nargs="*", default=[], help="zoo-train overrides for the fine-tuning runs only"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = Path(args.out)

    pretrain = [
        "finetune=none", "data.classes=[0,1,2,3,4]", "data.train_per_class=null", "data.orientations=8",
        "data.batch_size=32", f"trainer.max_epochs={args.pretrain_epochs}", *args.pretrain_override,
    ]  # fmt: skip
    if args.weights:
        weights = Path(args.weights)
    else:
        record, seconds = zoo_train(pretrain, out / "pretrain", env)
        weights = out / "pretrain" / "checkpoints" / "best.ckpt"
        acc = 100 * record["test"]["test/acc"]
        print(f"pretrained on digits 0-4 in 8 orientations: test acc {acc:.1f}% in {seconds:.0f} s", flush=True)

    def run(mode: str, seed: int) -> tuple[dict, float]:
        extra = [] if mode == "scratch" else [f"finetune.weights={weights}", *args.finetune_override]
        extra += LECTURE_RATES.get(mode, []) if args.lecture_rates else []
        return zoo_train([*MODES[mode], *args.override, *extra, f"seed={seed}"], out / mode / str(seed), env)

    rows, accuracy = [], {}
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own process
        results = {(m, s): pool.submit(run, m, s) for m in args.modes for s in args.seeds}
        for mode in args.modes:
            records = [results[mode, s].result() for s in args.seeds]
            accs = accuracy[mode] = [100 * r["test"]["test/acc"] for r, _ in records]
            times, params = [t for _, t in records], records[-1][0]["trainable_params"]
            spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
            rows.append(f"| {mode} | {params:,} | {statistics.mean(accs):.1f}{spread} | {statistics.mean(times):.0f} |")
            print(rows[-1], flush=True)

    threads = args.threads or torch.get_num_threads()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {threads} torch thread(s), torch {torch.__version__}"
    rates = "the lecture's rates" if args.lecture_rates else "the experiment's rates (head 1e-2, stages 1e-3)"
    source = f"the weights {weights}" if args.weights else f"pretrained ({' '.join(pretrain[1:])})"
    print(
        f"\nResNet-18 (small input, 8x8 digits) from {source}, "
        f"then digits 5-9 with 10 training images per class (180 test images), {rates}; "
        f"seeds {', '.join(map(str, args.seeds))}; {machine}:\n"
    )
    print("| mode | trainable params | test acc (%) | wall time (s) |\n|---|---|---|---|")
    print("\n".join(rows))
    if "scratch" in accuracy and len(args.seeds) > 1:
        # Paired by seed: runs with the same seed see the same batches in the same order.
        for mode in (m for m in args.modes if m != "scratch"):
            diffs = [a - b for a, b in zip(accuracy[mode], accuracy["scratch"], strict=True)]
            ahead, behind = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            print(f"{mode} - scratch, paired by seed: mean {statistics.mean(diffs):+.2f} points "
                  f"(std {statistics.stdev(diffs):.2f}), ahead in {ahead} of {len(diffs)} seeds, behind in {behind}; "
                  f"sign-flip test p = {sign_flip_p(diffs):.3f}; median {statistics.median(accuracy[mode]):.1f} "
                  f"vs {statistics.median(accuracy['scratch']):.1f}, worst seed {min(accuracy[mode]):.1f} "
                  f"vs {min(accuracy['scratch']):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark of the default run: accuracy and wall-clock time of ``zoo-train``, and the
framework's overhead against a plain PyTorch loop, side by side in one run.

    python scripts/bench_default.py [--seeds 0 1 2] [--epochs 5]

1. ``zoo-train seed=<s>`` as a fresh process per seed: test accuracy (median over seeds,
   target >= 99.0%) and seconds from start to exit (target <= 20 s on 2 CPU cores).
2. Training-loop throughput: the default config's Lightning module, data and callbacks,
   timed over training epochs only (validation excluded), against a hand-written loop
   with the same network, batches, augmentation, optimizer and schedule (target: ratio
   >= 0.90). Both run in this one process, one after the other; the first epoch of
   each is a warm-up and the median of the others is compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_default(seeds: list[int]) -> None:
    zoo_train = Path(sys.executable).parent / "zoo-train"
    accs, secs = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            subprocess.run(
                [str(zoo_train), f"seed={seed}", f"hydra.run.dir={run_dir}", "callbacks.progress_bar=none"],
                check=True, capture_output=True,
            )  # fmt: skip
            secs.append(time.perf_counter() - start)
            accs.append(json.loads((Path(run_dir) / "metrics.json").read_text())["test"]["test/acc"])
        print(f"zoo-train seed={seed}: test acc {accs[-1]:.4f}, {secs[-1]:.1f} s start to exit")
    print(f"median test acc {statistics.median(accs):.4f} (target >= 0.990); "
          f"median time {statistics.median(secs):.1f} s (target <= 20 s)")


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)


def overhead(epochs: int) -> None:
    from helpers import compose_config

    from zoo.cli.common import build_task, build_trainer, fit_model_to_data, plain
    from zoo.data import build_datamodule
    from zoo.data.digits import random_shift
    from zoo.optim import build_optimizer, build_scheduler
    from zoo.registry import get_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("train", Path(tmp), [f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0"])
        dm = build_datamodule(**plain(cfg.data))
        dm.setup("fit")
        model_cfg = fit_model_to_data(plain(cfg.model), dm.model_facts(), cfg.data.name)
        steps = len(dm.train_dataloader())

        # Lightning: the default run's module, callbacks and loggers.
        L.seed_everything(0, verbose=False)
        module = build_task(cfg, dm)
        timer = EpochTimer()
        trainer = build_trainer(cfg, Path(tmp))
        trainer.callbacks.append(timer)
        trainer.fit(module, datamodule=dm)

        # Plain PyTorch: same network, data, augmentation, optimizer and schedule.
        L.seed_everything(0, verbose=False)
        kwargs = dict(model_cfg)
        net = get_model(kwargs.pop("name"), **kwargs)
        criterion = torch.nn.CrossEntropyLoss()
        opt = build_optimizer(net.named_parameters(), **plain(cfg.optim))
        sched = build_scheduler(opt, total_steps=epochs * steps, steps_per_epoch=steps, **plain(cfg.sched))["scheduler"]
        plain_seconds = []
        net.train()
        for _ in range(epochs):
            start = time.perf_counter()
            for x, y in dm.train_dataloader():
                x = random_shift(x, dm.max_shift)
                loss = criterion(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            plain_seconds.append(time.perf_counter() - start)

    # The first epoch of each warms up allocators and caches: compare the rest.
    ours = steps / statistics.median(timer.seconds[1:])
    ref = steps / statistics.median(plain_seconds[1:])
    print(f"training loop, {steps} steps/epoch, batch {dm.batch_size}: zoo-train {ours:.1f} steps/s, "
          f"plain PyTorch {ref:.1f} steps/s, ratio {ours / ref:.2f} (target >= 0.90)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    overhead(args.epochs)
    run_default(args.seeds)


if __name__ == "__main__":
    main()

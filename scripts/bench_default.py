#!/usr/bin/env python
"""Benchmark of the default run: accuracy and wall-clock time of ``zoo-train``, and the
framework's overhead against a plain PyTorch loop, side by side in one run.

    python scripts/bench_default.py [--seeds 0 1 2] [--epochs 5]

1. ``zoo-train seed=<s>`` as a fresh process per seed: test accuracy (median over seeds,
   target >= 99.0%) and seconds from start to exit (target <= 20 s on 2 CPU cores).
2. Training-loop throughput: the default config's Lightning module, data and callbacks,
   timed from the start of each training epoch to its last step (validation and the
   end-of-epoch checkpoint excluded), against a hand-written loop with the same network,
   batches, augmentation, optimizer and schedule (target: ratio >= 0.90 at the default
   batch size). Both run in this one process, a Lightning epoch and a plain epoch in
   turn; the first pair is a warm-up and the median ratio of the others is reported.
   The same is measured at batch 64 (``--small-batch``), where Lightning's fixed cost
   per step weighs four times as much, and there once more with the rich progress bar
   instead of the default tqdm bar.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


class Interleaved(L.Callback):
    """Times each Lightning training epoch from its start to its last step, then runs one
    plain-PyTorch epoch, so both see the same machine state (on a shared 2-core VM the
    speed drifts by 10-30% over a minute; epoch-by-epoch pairs cancel that out)."""

    def __init__(self, plain_epoch: Callable[[], float]):
        self.plain_epoch = plain_epoch
        self.ours: list[float] = []
        self.plain: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, *args):
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.ours.append(self._last - self._start)
        self.plain.append(self.plain_epoch())


def overhead(epochs: int, batch_size: int | None, extra: tuple[str, ...] = ()) -> float:
    """Steps/s of the default run's training loop against a plain loop; returns the ratio."""
    from helpers import compose_config

    from zoo.cli.common import build_task, build_trainer, fit_model_to_data, plain, trainer_options
    from zoo.data import build_datamodule
    from zoo.data.digits import random_shift
    from zoo.optim import build_optimizer, build_scheduler
    from zoo.perf import use_channels_last
    from zoo.registry import get_model

    overrides = [f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0"]
    if batch_size:
        overrides.append(f"data.batch_size={batch_size}")
    overrides += extra
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("train", Path(tmp), overrides)
        dm = build_datamodule(**plain(cfg.data))
        dm.setup("fit")
        model_cfg = fit_model_to_data(plain(cfg.model), dm.model_facts(), cfg.data.name)
        loader = dm.train_dataloader()
        steps = len(loader)

        # Plain PyTorch: same network, data, augmentation, optimizer, schedule, precision
        # and memory format (trainer.precision=auto and perf.channels_last=auto resolved).
        L.seed_everything(0, verbose=False)
        kwargs = dict(model_cfg)
        net = get_model(kwargs.pop("name"), **kwargs).train()
        precision = trainer_options(cfg.trainer, net)["precision"]
        if use_channels_last(cfg.perf.channels_last, precision, net):
            net = net.to(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=str(precision).startswith("bf16"))
        criterion = torch.nn.CrossEntropyLoss()
        opt = build_optimizer(net.named_parameters(), **plain(cfg.optim))
        sched = build_scheduler(opt, total_steps=epochs * steps, steps_per_epoch=steps, **plain(cfg.sched))["scheduler"]

        def plain_epoch() -> float:
            start = time.perf_counter()
            for x, y in loader:
                x = random_shift(x, dm.max_shift)
                with autocast:
                    loss = criterion(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            return time.perf_counter() - start

        # Lightning: the default run's module, callbacks (progress bar included) and loggers.
        L.seed_everything(0, verbose=False)
        module = build_task(cfg, dm)
        timer = Interleaved(plain_epoch)
        trainer = build_trainer(cfg, Path(tmp), module.net)
        trainer.callbacks.insert(0, timer)
        trainer.fit(module, datamodule=dm)

    # The first pair warms up allocators and caches.
    ratio = statistics.median(p / o for o, p in zip(timer.ours[1:], timer.plain[1:]))
    ours = steps / statistics.median(timer.ours[1:])
    ref = steps / statistics.median(timer.plain[1:])
    print(f"training loop, batch {dm.batch_size} ({steps} steps/epoch), {precision}{''.join(' ' + e for e in extra)}: "
          f"zoo-train {ours:.1f} steps/s ({ours * dm.batch_size:.0f} images/s), plain PyTorch {ref:.1f} steps/s; "
          f"median ratio over {epochs - 1} epoch pairs {ratio:.2f}; framework cost {1e3 / ours - 1e3 / ref:.2f} ms/step")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--small-batch", type=int, default=64, help="also measure the overhead at this batch size")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    ratio = overhead(args.epochs, None)
    print(f"  ratio at the default batch size {ratio:.2f} (target >= 0.90)")
    if args.small_batch:
        overhead(args.epochs, args.small_batch)
        overhead(args.epochs, args.small_batch, ("callbacks.progress_bar=rich",))  # Lightning's rich bar
    run_default(args.seeds)


if __name__ == "__main__":
    main()

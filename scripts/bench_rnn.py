#!/usr/bin/env python
"""Training steps per second of the reference recurrent layers (src/zoo/layers/recurrent.py)
against the fused ``torch.nn`` ones (cuDNN on a GPU), side by side, same weights.

    python scripts/bench_rnn.py [--device cpu|cuda] [--batch 64] [--steps 32] [--hidden 128]
                                [--layers 2] [--repeats 20] [--threads N]

One step is a forward pass over a (batch, steps, hidden) sequence, a backward pass and
an SGD update. The median time of ``--repeats`` steps after two warm-up steps is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoo.layers.recurrent import make_rnn


def steps_per_second(layer: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 2):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out, _ = layer(x)
        out.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.hidden, device=args.device)
    print(f"device {args.device}, {torch.get_num_threads()} threads; batch {args.batch}, {args.steps} steps, "
          f"hidden {args.hidden}, {args.layers} layers; training steps/s (forward + backward + update)")
    print(f"{'cell':<6} {'bidirectional':<14} {'reference':>10} {'fused':>10} {'fused/ref':>10}")
    for cell in ("lstm", "gru"):
        for bidirectional in (False, True):
            kwargs = dict(input_size=args.hidden, hidden_size=args.hidden, num_layers=args.layers,
                          batch_first=True, bidirectional=bidirectional)  # fmt: skip
            reference = make_rnn(cell, "reference", **kwargs).to(args.device)
            fused = make_rnn(cell, "fused", **kwargs).to(args.device)
            fused.load_state_dict(reference.state_dict())
            ref_rate = steps_per_second(reference, x, args.repeats)
            fused_rate = steps_per_second(fused, x, args.repeats)
            print(f"{cell:<6} {str(bidirectional):<14} {ref_rate:>10.1f} {fused_rate:>10.1f} {fused_rate / ref_rate:>9.1f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The CUDA check: ResNet-50 and ViT-B/16 trained on synthetic 224 px batches, fp32 eager
# (ours beside torchvision's) and bf16 + channels_last, eager and compiled, printed as
# images/s with ratios (about 4 minutes on an H100, compilation included), then the
# resnet18_cifar10 recipe's training step on CIFAR-10-shaped synthetic data (images/s and
# seconds per epoch, fp32 and bf16 + channels_last).
# Run it on any machine with a CUDA GPU, from the checkout, installed or not:
#     bash scripts/gpu_check.sh [--models resnet50] [--batch-size 256] ...
# and record the output in docs/performance.md with the GPU's name.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
exec python3 "$here/bench_perf.py" --suite gpu cifar "$@"

"""Start-up time of each command line against ``python -c 'import torch'``, measured in one run.

    python scripts/startup_time.py [--repeats 7] > docs/benchmarks/startup.md

For each command: ``--help``, and a refused value (one ``Error:`` line, exit 1) where the
command takes one, each as a fresh process; the median and the worst of ``--repeats``
runs, and the median's ratio to importing torch measured in the same run. Then using a
trained model: ``zoo-predict`` on one image and ``zoo-translate`` on one sentence, each
beside a plain script that does the least a user's own script would (import torch and
torchvision, read the same checkpoint with ``torch.load(weights_only=True)``, transform the
image), with the ratio to it, and the least ratio a Hydra command line can reach (the plain
script plus the refused command's time beyond the interpreter's start). The checkpoints are
trained first, in a temporary folder (LeNet-5 on the digits, one epoch; a small GRU on
reversed strings). Prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

BIN = Path(sys.executable).parent
PYTHON, REFUSED = "python -c pass", "zoo-predict (no ckpt_path: refused)"
CASES = [
    ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
    (PYTHON, [sys.executable, "-c", "pass"]),
    ("python -c 'import lightning'", [sys.executable, "-c", "import lightning"]),
    *[(f"zoo-{c} --help", [str(BIN / f"zoo-{c}"), "--help"]) for c in ("train", "eval", "predict", "translate", "export")],
    ("zoo-train data.batch_size=0 (refused)", [str(BIN / "zoo-train"), "data.batch_size=0"]),
    (REFUSED, [str(BIN / "zoo-predict")]),
    ("zoo-models lenet5", [str(BIN / "zoo-models"), "lenet5"]),
]


# What a user's own script needs at least to use a checkpoint: the libraries, the file, the input.
PLAIN_IMAGE = """import sys, torch
from PIL import Image
from torchvision.transforms import v2
ckpt = torch.load(sys.argv[1], weights_only=True)
transform = v2.Compose([v2.Grayscale(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(32), v2.CenterCrop(32)])
transform(Image.open(sys.argv[2]))[None]
"""
PLAIN_TEXT = """import sys, torch
ckpt = torch.load(sys.argv[1], weights_only=True)
torch.tensor([[ord(c) for c in sys.argv[2]]])
"""
TRAIN_QUIET = ["~logger", "callbacks.progress_bar=none", "trainer.enable_model_summary=false"]
SEQ2SEQ = ["model=seq2seq_gru", "data=reverse", "data.train_size=256", "trainer.max_epochs=1", "sched=none"]


def trained_cases(folder: Path) -> list[tuple[str, list[str]]]:
    """Train the two checkpoints in ``folder`` and give the cases that use them."""
    runs = {"digits": ["trainer.max_epochs=1"], "seq2seq": SEQ2SEQ}
    for name, overrides in runs.items():
        subprocess.run([str(BIN / "zoo-train"), *overrides, *TRAIN_QUIET, f"hydra.run.dir={folder / name}"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    digits, seq2seq = (str(folder / name / "checkpoints" / "last.ckpt") for name in runs)
    image = folder / "one.png"
    Image.new("L", (8, 8), 255).save(image)
    return [
        ("plain script: torch.load + one image transformed", [sys.executable, "-c", PLAIN_IMAGE, digits, str(image)]),
        ("zoo-predict one image", [str(BIN / "zoo-predict"), f"ckpt_path={digits}", f"inputs={image}"]),
        ("plain script: torch.load + one sentence encoded", [sys.executable, "-c", PLAIN_TEXT, seq2seq, "abc"]),
        ("zoo-translate one sentence", [str(BIN / "zoo-translate"), f"ckpt_path={seq2seq}", "text=abc"]),
    ]


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        used = trained_cases(Path(folder))
        cases = CASES + used
        for _, command in cases:  # warm the file cache once
            seconds(command)
        times = {name: [] for name, _ in cases}
        for _ in range(args.repeats):  # interleaved, so that a busy moment hits every case alike
            for name, command in cases:
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
    print("\n## Using a trained model\n")
    print("Each command against the plain script beside it: the least a user's own script does with the same"
          " checkpoint (import torch, and torchvision for an image; `torch.load(weights_only=True)`; transform the input). The"
          " commands read the network and its preprocessing from the checkpoint with torch and torchvision only;"
          " they import no Lightning, and compose their config once (`zoo.cli.launch.COMPOSED_ONCE`). What remains"
          " above the plain script is the command line's own work: importing Hydra and composing the config, and"
          " the network built twice (on the meta device to check the file's weights fit it, then for real).\n")
    # What any Hydra command pays before its own work: the refused command less the interpreter's start.
    hydra = statistics.median(times[REFUSED]) - statistics.median(times[PYTHON])
    print("| command | median (s) | worst (s) | median / plain script | least a Hydra command can reach |")
    print("|---|---|---|---|---|")
    for (plain, _), (name, _) in zip(used[::2], used[1::2]):
        base = statistics.median(times[plain])
        for row in (plain, name):
            median = statistics.median(times[row])
            least = f"{(base + hydra) / base:.2f}" if row == name else ""
            print(f"| `{row}` | {median:.2f} | {max(times[row]):.2f} | {median / base:.2f} | {least} |")
    print(f"\nThe last column is the plain script plus what `{REFUSED}` takes beyond `{PYTHON}` ({hydra:.2f} s:"
          " importing Hydra, composing the config once, one error line), over the plain script: the ratio a"
          " command line built on Hydra cannot go below, whatever it does after composing.")


if __name__ == "__main__":
    main()

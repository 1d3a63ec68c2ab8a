"""``zoo-predict ckpt_path=... inputs=...``: use a trained model on your own files.

Image checkpoints print the ``top_k`` classes of each image with their probabilities,
named as the training data named them (ImageFolder folder names, CIFAR class names,
digits), after the checkpoint's own preprocessing (any size; grayscale, RGB, RGBA and
palette images converted to the model's channels). Files that cannot be read are
reported by name and skipped; the exit code is 1 if there were any. Images are read in
``num_workers`` DataLoader processes and run ``batch_size`` at a time, by torch
(``backend=torch``: ``precision=auto|fp32|bf16`` and ``channels_last=auto|true|false`` as
training chooses them, :func:`zoo.inference.torch_runner`) or by ONNX Runtime on the
checkpoint's ``zoo-export`` file (``backend=onnxruntime``, ``onnx=<file>``;
:func:`zoo.export.onnx_runner`), or by whichever of the two the rule of
:func:`zoo.export.choose_backend` picks (``backend=auto``); stderr says which and why.

Seq2seq checkpoints translate each line of the text files in ``inputs`` (or each string
in ``text``) with :func:`zoo.inference.translate`, which ``zoo-translate`` uses too.
``csv=<file>`` writes the results as a table as well, whole or not at all
(:func:`zoo.inference.output_writer`); a ``csv`` that cannot be written (a folder, a path
under a file) is refused before anything is computed. Class names, outputs, paths and texts
are printed and written with their control characters escaped (:func:`zoo.sanitize.printable`):
a checkpoint's class names must not drive the terminal.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoo import export as exporting
from zoo import inference
from zoo.data.inputs import ImageInputs
from zoo.errors import ConfigError, DataError
from zoo.sanitize import printable

log = logging.getLogger("zoo")

BACKENDS = ("torch", "onnxruntime", "auto")  # what runs the network on images (backend=)


def _listed(value) -> list:
    if value is None:
        return []
    return list(OmegaConf.to_container(value)) if OmegaConf.is_list(value) else [value]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """``rows`` under ``header`` as a UTF-8 CSV file that replaces ``path`` whole, every cell printable."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows([printable(cell) if isinstance(cell, str) else cell for cell in row] for row in rows)
    with inference.output_writer(path) as file:
        file.write(text.getvalue().encode("utf-8"))
    log.info("wrote %s", printable(str(path)))


def predict_images(cfg: DictConfig, trained: inference.Trained) -> int:
    if cfg.top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {cfg.top_k}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {cfg.backend!r}")
    paths = inference.image_files(_listed(cfg.inputs))
    backend, torch_settings = cfg.backend, (cfg.precision, cfg.channels_last) != ("auto", "auto")
    if backend == "auto":
        if torch_settings:
            backend, why = "torch", "auto: precision= and channels_last= are torch's settings"
        else:
            backend, why = exporting.choose_backend(trained, cfg.onnx)
        log.info("backend %s (%s)", backend, why)
    if backend == "onnxruntime":
        if torch_settings:
            raise ConfigError("precision= and channels_last= choose how torch runs the network; backend=onnxruntime runs the ONNX file as exported")
        runner = exporting.onnx_runner(trained, cfg.onnx)
    else:
        runner = inference.torch_runner(trained, cfg.precision, cfg.channels_last)
    log.info("running: %s", runner.description)
    predictions, failures = inference.classify(trained, paths, cfg.top_k, cfg.batch_size, cfg.invert, runner, cfg.num_workers)
    for p in predictions:
        shown = ", ".join(f"{printable(name)} {prob:.4f}" for name, prob in zip(p.names, p.probabilities))
        print(f"{printable(str(p.path))}: {shown}")
    for message in failures:
        log.error("skipped: %s", printable(message))
    if cfg.csv:
        rows = [
            [str(p.path), rank, index, name, f"{prob:.6f}"]
            for p in predictions
            for rank, (index, name, prob) in enumerate(zip(p.classes, p.names, p.probabilities), start=1)
        ]  # fmt: skip
        _write_csv(Path(cfg.csv), ["path", "rank", "class_index", "class_name", "probability"], rows)
    if failures:
        log.error("%d of %d files could not be read", len(failures), len(paths))
    return len(failures)


def predict_texts(cfg: DictConfig, trained: inference.Trained) -> int:
    texts = [t for t in _listed(cfg.text) if isinstance(t, str)]
    for path in _listed(cfg.inputs):
        path = Path(path)
        try:
            texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read text file {path.resolve()}: {err}") from None
    if not texts:
        raise ConfigError("no text to translate: give inputs=<text file> (one input per line) or text=<string>")
    results = inference.translate(
        trained, texts, cfg.beam_size, cfg.length_penalty, cfg.max_len, cfg.max_source_len, cfg.truncate
    )
    for r in results:
        if r.unknown:
            log.warning("%r holds tokens the model never saw (read as <unk>): %s", r.text, r.unknown)
        print(f"{printable(r.text)}\t{printable(r.output)}")
    if cfg.csv:
        _write_csv(Path(cfg.csv), ["input", "output"], [[r.text, r.output] for r in results])
    return 0


def predict(cfg: DictConfig) -> int:
    """Print the predictions; returns the number of inputs that failed."""
    if cfg.csv:
        inference.check_output(cfg.csv)  # before the work whose results it would receive
    trained = inference.load_trained(cfg.ckpt_path, cfg.device)
    if isinstance(trained.inputs, ImageInputs):
        if cfg.inputs is None:
            raise ConfigError("inputs=<image file or folder> is required for an image checkpoint")
        return predict_images(cfg, trained)
    if cfg.backend == "onnxruntime":  # decoding is a loop over the network's steps: torch runs it
        raise ConfigError(f"backend={cfg.backend} runs image classifiers; {trained.path} decodes text, which torch runs")
    return predict_texts(cfg, trained)


def run(cfg: DictConfig) -> None:
    """What ``zoo-predict`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    if predict(cfg):
        sys.exit(1)


if __name__ == "__main__":
    from zoo.cli.launch import predict as main

    main()

"""``zoo-translate ckpt_path=... text="3 may 1998"``: decode text with a seq2seq checkpoint.

Prints each input text with its output, ``input<TAB>output`` as ``zoo-predict`` does
(``text`` may be a list: ``'text=[3 may 1998,12/09/71]'``). ``nbest=N`` prints each input
on a line of its own, then its ``N`` best outputs, best first, one a line as
``<TAB>score<TAB>output`` (the score beam search ranks by, ``log p / len ** length_penalty``).
``beam_size`` left unset is ``nbest`` (1: greedy decoding); a ``beam_size`` under ``nbest``
is refused, as the search keeps no more hypotheses than its beam.
Everything comes from the checkpoint alone, read with :mod:`zoo.checkpoint`: the network
from its hyperparameters and weights, the vocabularies from the data module's state.
``heatmap=attention.png`` saves the attention weights (output tokens x source tokens) as
a PNG heat map; with several texts the files are numbered (``attention_1.png``, ...). Each
is written whole or not at all (:func:`zoo.inference.output_writer`); a ``heatmap`` that
cannot be written (a folder, a path under a file) is refused before anything is decoded.
Texts and outputs are printed with their control characters escaped
(:func:`zoo.sanitize.printable`): a checkpoint's vocabulary must not drive the terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from zoo import inference
from zoo.errors import ConfigError
from zoo.inference import load_trained
from zoo.sanitize import printable

log = logging.getLogger("zoo")


def save_attention_heatmap(weights: torch.Tensor, source: list[str], output: list[str], path: Path) -> None:
    """``weights`` (len(output), len(source)) as a heat map labelled with the tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * cols + 1.5), max(3.0, 0.35 * rows + 1.2)))
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), [repr(t)[1:-1] if t.strip() else "␣" for t in source], rotation=90)
    ax.set_yticks(range(rows), [repr(t)[1:-1] if t.strip() else "␣" for t in output])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    try:
        with inference.output_writer(path) as file:  # the format by the name's suffix, as savefig(path) picks it
            fig.savefig(file, dpi=120, format=path.suffix[1:] or None)
    finally:
        plt.close(fig)


def translate(cfg: DictConfig) -> list[str]:
    """The outputs for ``cfg.text`` (printed, one per line), and heat maps if asked."""
    texts = OmegaConf.to_container(cfg.text) if OmegaConf.is_list(cfg.text) else [cfg.text]
    for i, text in enumerate(texts):
        # Hydra reads an unquoted all-digit text (text=19980503) as an integer. It keeps a
        # leading zero (0123 stays a string) but drops '_' and a leading '+' (1_2 -> 12).
        if isinstance(text, int) and not isinstance(text, bool):
            texts[i] = str(text)
            shown = texts[i][:20] + ("..." if len(texts[i]) > 20 else "")
            log.warning("text %s was read as a number, which drops any '_' or leading '+'; quote it to pass it "
                        "as written, as in 'text=\"+1_2\"'", shown)  # fmt: skip
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ConfigError(f"text must be a non-empty string or a list of them, got {cfg.text!r}")
    if cfg.heatmap:
        inference.check_output(cfg.heatmap)  # before decoding
    nbest, beam_size = cfg.nbest, cfg.beam_size
    if beam_size is None:  # nbest is checked by inference.translate
        beam_size = nbest if isinstance(nbest, int) and not isinstance(nbest, bool) and nbest > 1 else 1
        if beam_size > 1:
            log.info("beam search with beam_size=%d for nbest=%d (beam_size=N searches wider)", beam_size, nbest)
    trained = load_trained(cfg.ckpt_path, cfg.device)
    results = inference.translate(
        trained, texts, beam_size, cfg.length_penalty, cfg.max_len, cfg.max_source_len, cfg.truncate, nbest
    )
    for i, result in enumerate(results, start=1):
        if result.unknown:
            log.warning("%r holds tokens the model never saw (read as <unk>): %s", result.text, result.unknown)
        if result.hypotheses:
            print(printable(result.text))
            for output, score in result.hypotheses:
                print(f"\t{score:.4f}\t{printable(output)}")
        else:
            print(f"{printable(result.text)}\t{printable(result.output)}")
        if cfg.heatmap and result.attention is not None:
            path = Path(cfg.heatmap)
            if len(texts) > 1:
                path = path.with_name(f"{path.stem}_{i}{path.suffix}")
            save_attention_heatmap(result.attention, result.source_tokens, result.output_tokens, path)
            log.info("attention heat map: %s", printable(str(path)))
    return [r.output for r in results]


def run(cfg: DictConfig) -> None:
    """What ``zoo-translate`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    translate(cfg)


if __name__ == "__main__":
    from zoo.cli.launch import translate as main

    main()

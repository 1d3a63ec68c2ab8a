"""``zoo-translate ckpt_path=... text="3 may 1998"``: decode text with a seq2seq checkpoint.

Prints one output per input text (``text`` may be a list: ``'text=[3 may 1998,12/09/71]'``).
Everything comes from the checkpoint alone, read with :mod:`zoo.checkpoint`: the network
from its hyperparameters and weights, the vocabularies from the data module's state.
``heatmap=attention.png`` saves the attention weights (output tokens x source tokens) as
a PNG heat map; with several texts the files are numbered (``attention_1.png``, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from zoo.checkpoint import load_lightning_checkpoint
from zoo.cli.common import config_dir, config_errors, reports_user_errors
from zoo.data.text import restore_datamodule
from zoo.data.vocab import EOS, tokenize
from zoo.errors import ConfigError
from zoo.tasks import TASKS

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def translate(cfg: DictConfig) -> list[str]:
    """The outputs for ``cfg.text`` (printed, one per line), and heat maps if asked."""
    texts = OmegaConf.to_container(cfg.text) if OmegaConf.is_list(cfg.text) else [cfg.text]
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ConfigError(f"text must be a non-empty string or a list of them, got {cfg.text!r}")
    if cfg.beam_size < 1:
        raise ConfigError(f"beam_size must be at least 1, got {cfg.beam_size}")
    ckpt = load_lightning_checkpoint(cfg.ckpt_path)
    with config_errors(f"checkpoint {cfg.ckpt_path}"):
        datamodule = restore_datamodule(ckpt)
        module = TASKS.get(datamodule.task)(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
    net = module.net.to(cfg.device).eval()
    src_vocab, tgt_vocab = datamodule.src_vocab, datamodule.tgt_vocab

    outputs = []
    for i, text in enumerate(texts, start=1):
        ids = src_vocab.encode(text, eos=True)
        unknown = sorted({t for t in tokenize(text, src_vocab.level) if t not in src_vocab.stoi})
        if unknown:
            log.warning("%r holds tokens the model never saw (read as <unk>): %s", text, unknown)
        src = torch.tensor([ids], device=cfg.device)
        max_len = cfg.max_len or 2 * src.shape[1] + 10
        result = net.generate(src, torch.ones_like(src, dtype=torch.bool), max_len, cfg.beam_size, cfg.length_penalty)
        tokens = result.tokens[0].tolist()
        outputs.append(tgt_vocab.decode(tokens))
        print(outputs[-1])
        if cfg.heatmap and result.attention is not None:
            steps = tokens.index(net.eos_idx) + 1 if net.eos_idx in tokens else len(tokens)
            path = Path(cfg.heatmap)
            if len(texts) > 1:
                path = path.with_name(f"{path.stem}_{i}{path.suffix}")
            out_tokens = tgt_vocab.tokens(tokens) + ([EOS] if net.eos_idx in tokens else [])
            src_tokens = [src_vocab.itos[j] for j in ids]
            save_attention_heatmap(result.attention[0, :steps].cpu(), src_tokens, out_tokens, path)
            log.info("attention heat map: %s", path)
    return outputs


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="translate")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    translate(cfg)


if __name__ == "__main__":
    main()

"""omniformer-generate: continue a prompt with a trained language model.

    omniformer-generate ckpt=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" max_new_tokens=300 \
        temperature=0.8 top_k=200 context_len=64

``temperature=0`` is greedy; ``top_k=0`` or ``top_k=null`` samples from the full distribution;
``context_len`` caps the tokens the model sees (default: the training block size). The task is rebuilt
from the checkpoint's stored config, checked first (:mod:`omniformer.trusted_config`);
``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence

import hydra
import torch
from omegaconf import DictConfig

from omniformer.checkpoint import (
    checkpoint_artifacts,
    checkpoint_config,
    load_checkpoint,
    task_from_checkpoint,
)
from omniformer.sampling import check_sampling
from omniformer.tokenizers.vocab import vocab_from_json
from omniformer.trusted_config import parse_allow_targets


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; any other value is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def generate_text(
    ckpt: str,
    prompt: str,
    max_new_tokens: int = 300,
    temperature: float = 0.8,
    top_k: int | None = 200,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "auto",
    context_len: int | None = None,
    allow_targets: str | Sequence[str] | None = None,
) -> list[str]:
    """Sample ``num_samples`` continuations of ``prompt`` from the language model in ``ckpt``.

    ``context_len`` caps how many tokens the model sees (default: the training block size stored in
    the checkpoint's config). ``top_k`` 0 or ``None`` keeps the full distribution. ``allow_targets``
    names plug-in packages whose classes the checkpoint's stored config may build.

    Raises:
        ValueError: a negative ``temperature``, ``top_k`` or ``max_new_tokens``, a ``context_len``
            below 2 or ``num_samples`` below 1 (naming the setting), or a checkpoint that is not a
            language model's.
    """
    check_sampling(temperature, top_k, max_new_tokens)
    if context_len is not None and (
        isinstance(context_len, bool) or not isinstance(context_len, int) or context_len < 2
    ):
        raise ValueError(
            f"context_len={context_len!r}: give a whole number of tokens >= 2 (the model needs two to "
            "predict from), or null for the training block size"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: give a whole number >= 1")
    allowed = parse_allow_targets(allow_targets)
    checkpoint = load_checkpoint(ckpt)
    artifacts = checkpoint_artifacts(checkpoint)
    if "vocab.json" not in artifacts:
        raise ValueError(f"{ckpt} holds no text vocabulary: it is not a language-model checkpoint")
    vocab = vocab_from_json(artifacts["vocab.json"])
    task = task_from_checkpoint(checkpoint, allowed, source=ckpt).to(pick_device(device))
    if not hasattr(task, "sample"):
        raise ValueError(f"{ckpt} was trained as {type(task).__name__}, which cannot generate text")
    task.temperature, task.top_k = temperature, top_k
    stored = checkpoint_config(checkpoint).get("data", {}).get("block_size")
    task.context_len = context_len or getattr(task, "context_len", None) or stored
    return [task.sample(vocab, prompt, max_new_tokens, seed=seed + i) for i in range(num_samples)]


@hydra.main(config_path="conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print generated samples."""
    samples = generate_text(
        cfg.ckpt,
        cfg.prompt,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_k,
        cfg.num_samples,
        cfg.seed,
        cfg.device,
        cfg.get("context_len"),
        cfg.get("allow_targets"),
    )
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1} ---")
        print(text)


if __name__ == "__main__":
    main()

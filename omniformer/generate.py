"""omniformer-generate: continue a prompt with a trained language model.

    omniformer-generate ckpt=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" max_new_tokens=300 \
        temperature=0.8 top_k=200 context_len=64

``temperature=0`` is greedy; ``top_k=0`` or ``top_k=null`` samples from the full distribution;
``context_len`` caps the tokens the model sees (default: the training block size). ``ckpt`` may also
be a model folder (omniformer-export). The model is rebuilt from the stored config, checked first
(:mod:`omniformer.trusted_config`); ``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from omniformer.api import load
from omniformer.inference import check_generation


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
    """Sample ``num_samples`` continuations of ``prompt`` from the language model in ``ckpt`` (a
    checkpoint or a model folder, :func:`omniformer.load`).

    ``context_len`` caps how many tokens the model sees (default: the training block size stored
    with the model). ``top_k`` 0 or ``None`` keeps the full distribution. ``allow_targets`` names
    plug-in packages whose classes the stored config may build.

    Raises:
        ValueError: a negative ``temperature``, ``top_k`` or ``max_new_tokens``, a ``context_len``
            below 2 or ``num_samples`` below 1 (naming the setting), or a model that is not a
            language model.
    """
    check_generation(temperature, top_k, max_new_tokens, num_samples, context_len)
    model = load(ckpt, device=device, allow_targets=allow_targets)
    return model.generate(prompt, max_new_tokens, temperature, top_k, seed, num_samples, context_len)


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

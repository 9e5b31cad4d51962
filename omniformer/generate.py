"""omniformer-generate: continue a prompt with a language model, or write the text of a clip or an
image with a prefix LM (task=prefix_lm: experiment=transcribe_digits, experiment=read_digits).

    omniformer-generate ckpt=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" max_new_tokens=300 \\
        temperature=0.8 top_k=200 context_len=64
    omniformer-generate ckpt=outputs/.../checkpoints/best.ckpt audio=clip.wav        # prints its words
    omniformer-generate ckpt=models/read_digits image=digits.png prompt="3 "         # text starts "3 "

``temperature=0`` is greedy (the default for a prefix LM; 0.8 for a language model); ``top_k=0`` or
``top_k=null`` samples from the full distribution; ``max_new_tokens`` defaults to 300 for a language
model and to the longest training text for a prefix LM, which stops at end of text; ``context_len``
caps the tokens a language model sees (default: the training block size). A prefix LM reads
``audio=`` / ``image=`` files as its training data read media (rate, channels, height,
normalisation: ``media.json`` in the checkpoint), and ``prompt=`` is the start of the text it writes
(characters of its vocabulary). ``ckpt`` may also be a model folder (omniformer-export). The model
is rebuilt from the stored config, checked first (:mod:`omniformer.trusted_config`);
``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from omniformer.api import load
from omniformer.inference import check_generation
from omniformer.model_spec import PREFIX_LM

#: The prompt when none is given: a new line for a language model, nothing for a prefix LM.
LM_PROMPT = "\n"


def generate_text(
    ckpt: str,
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = 200,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "auto",
    context_len: int | None = None,
    allow_targets: str | Sequence[str] | None = None,
    audio: str | Path | None = None,
    image: str | Path | None = None,
) -> list[str]:
    """Sample ``num_samples`` texts from the model in ``ckpt`` (a checkpoint or a model folder,
    :func:`omniformer.load`): continuations of ``prompt`` by a language model, or a prefix LM's text
    for the ``audio`` or ``image`` file, starting with ``prompt``
    (:meth:`omniformer.inference.Model.generate`).

    ``context_len`` caps how many tokens a language model sees (default: the training block size
    stored with the model). ``top_k`` 0 or ``None`` keeps the full distribution. ``None`` for
    ``prompt``, ``max_new_tokens`` or ``temperature`` means the model kind's default (module
    docstring). ``allow_targets`` names plug-in packages whose classes the stored config may build.

    Raises:
        ValueError: a negative ``temperature``, ``top_k`` or ``max_new_tokens``, a ``context_len``
            below 2 or ``num_samples`` below 1 (naming the setting); ``audio``/``image`` for a model
            that cannot read it, or both; a prompt character outside the model's vocabulary; a prefix
            longer than ``model.max_seq_len``; or a classifier.
        FileNotFoundError: an ``audio``/``image`` file that does not exist (naming it).
    """
    check_generation(
        0.0 if temperature is None else temperature,
        top_k,
        1 if max_new_tokens is None else max_new_tokens,
        num_samples,
        context_len,
    )
    if audio is not None and image is not None:
        raise ValueError("give audio= or image=, not both: a prefix LM reads one prefix")
    model = load(ckpt, device=device, allow_targets=allow_targets)
    if prompt is None:
        prompt = "" if model.kind == PREFIX_LM or audio is not None or image is not None else LM_PROMPT
    return model.generate(
        prompt,
        max_new_tokens,
        temperature,
        top_k,
        seed,
        num_samples,
        context_len,
        audio=audio,
        image=image,
    )


@hydra.main(config_path="conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print generated samples."""
    from omniformer.known_warnings import silence_known_warnings

    silence_known_warnings()
    samples = generate_text(
        cfg.ckpt,
        cfg.get("prompt"),
        cfg.get("max_new_tokens"),
        cfg.get("temperature"),
        cfg.top_k,
        cfg.num_samples,
        cfg.seed,
        cfg.device,
        cfg.get("context_len"),
        cfg.get("allow_targets"),
        cfg.get("audio"),
        cfg.get("image"),
    )
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1} ---")
        print(text)


if __name__ == "__main__":
    main()

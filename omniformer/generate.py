"""omniformer-generate: continue a prompt with a language model, or write the text of a clip or an
image with a prefix LM (task=prefix_lm: experiment=transcribe_digits, experiment=read_digits).

    omniformer-generate ckpt=outputs/.../checkpoints/last.ckpt prompt="ROMEO:" max_new_tokens=300 \\
        temperature=0.8 top_k=200 top_p=0.9 context_len=64
    omniformer-generate ckpt=... prompt_file=opening.txt stop='["\\n\\n"]' stream=true
    omniformer-generate ckpt=... interactive=true        # each line typed is a prompt; empty line ends
    omniformer-generate ckpt=outputs/.../checkpoints/best.ckpt audio=clip.wav        # prints its words
    omniformer-generate ckpt=models/read_digits image=digits.png prompt="3 "         # text starts "3 "

``temperature=0`` is greedy (the default for a prefix LM; 0.8 for a language model); ``top_k=0`` or
``top_k=null`` samples from the full distribution; ``top_p`` (nucleus sampling, after ``top_k``)
keeps the most likely tokens holding that probability mass (1 or null: all); ``stop`` (a string or a
list; ``\\n``, ``\\t`` and ``\\\\`` in it are a new line, a tab and a backslash) ends the new text
before the first stop string in it (the prompt is not searched); ``max_new_tokens`` defaults to 300
for a language model and to the longest training text for a prefix LM, which stops at end of text;
``context_len`` caps the tokens a language model sees (default: the training block size).
``stream=true`` prints a language model's text token by token as it is drawn (the same text as
without it, for the same seed; a prefix LM's text is printed when written). ``prompt_file`` reads
the prompt from a UTF-8 file, as it is (a final new line is part of it). ``interactive=true`` loads
the model once and reads prompts from standard input, one per line, until an empty line or end of
input. A prefix LM reads ``audio=`` / ``image=`` files as its training
data read media (rate, channels, height, normalisation: ``media.json`` in the checkpoint), and
``prompt=`` is the start of the text it writes (characters of its vocabulary). ``ckpt`` may also be
a model folder (omniformer-export). The model is rebuilt from the stored config, checked first
(:mod:`omniformer.trusted_config`); ``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from omniformer.api import load
from omniformer.inference import KIND_NAMES, Model, check_one_media
from omniformer.model_spec import LANGUAGE_MODEL, PREFIX_LM
from omniformer.sampling import check_generation
from omniformer.text_stream import check_stop

#: The prompt when none is given: a new line for a language model, nothing for a prefix LM.
LM_PROMPT = "\n"
#: The escapes a stop string may use on the command line.
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


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
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
) -> list[str]:
    """Sample ``num_samples`` texts from the model in ``ckpt`` (a checkpoint or a model folder,
    :func:`omniformer.load`): continuations of ``prompt`` by a language model, or a prefix LM's text
    for the ``audio`` or ``image`` file, starting with ``prompt``
    (:meth:`omniformer.inference.Model.generate`).

    ``context_len`` caps how many tokens a language model sees (default: the training block size
    stored with the model). ``top_k`` 0 or ``None`` and ``top_p`` 1 or ``None`` keep the full
    distribution; ``stop`` strings end the new text. ``None`` for ``prompt``, ``max_new_tokens``
    or ``temperature`` means the model kind's default (module docstring). ``allow_targets`` names
    plug-in packages whose classes the stored config may build.

    Raises:
        ValueError: a negative ``temperature``, ``top_k`` or ``max_new_tokens``, a ``top_p`` outside
            (0, 1], an empty ``stop`` string, a ``context_len`` below 2 or ``num_samples`` below 1
            (naming the setting); ``audio``/``image`` for a model that cannot read it, or both; a
            prompt character outside the model's vocabulary; a prefix longer than
            ``model.max_seq_len``; or a classifier.
        FileNotFoundError: an ``audio``/``image`` file that does not exist (naming it).
    """
    settings = check_settings(max_new_tokens, temperature, top_k, top_p, stop, num_samples, context_len)
    check_one_media(audio, image)
    model = load(ckpt, device=device, allow_targets=allow_targets)
    if prompt is None:
        prompt = default_prompt(model, audio, image)
    return model.generate(prompt, seed=seed, num_samples=num_samples, audio=audio, image=image, **settings)


def check_settings(
    max_new_tokens: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    stop: str | Sequence[str] | None,
    num_samples: int,
    context_len: int | None,
) -> dict[str, Any]:
    """The sampling settings of :meth:`Model.generate`, checked before the model is loaded (one error
    naming the setting)."""
    check_generation(
        0.0 if temperature is None else temperature,
        top_k,
        1 if max_new_tokens is None else max_new_tokens,
        num_samples,
        context_len,
        top_p,
    )
    stop = list(stop) if stop is not None and not isinstance(stop, str) else stop
    return dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=check_stop(stop) or None,
        context_len=context_len,
    )


def default_prompt(model: Model, audio: Any = None, image: Any = None) -> str:
    """What ``prompt=null`` means for ``model``: a new line for a language model, nothing after media."""
    return "" if model.kind == PREFIX_LM or audio is not None or image is not None else LM_PROMPT


def unescape(text: Any) -> Any:
    """A command line's ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` in a stop string as a new line, tab, carriage
    return and backslash (Hydra keeps them as typed); anything but a string as it is."""
    if not isinstance(text, str):
        return text
    return re.sub(r"\\([\\ntr])", lambda m: ESCAPES[m.group(1)], text)


def read_prompt(prompt: str | None, prompt_file: str | Path | None) -> str | None:
    """The prompt: ``prompt``, or the text of ``prompt_file`` (UTF-8; a byte-order mark is dropped)."""
    if prompt_file is None:
        return prompt
    if prompt is not None:
        raise ValueError(f"prompt={prompt!r} and prompt_file={prompt_file}: give one of them, not both")
    path = Path(prompt_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt_file={path}: no such file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"prompt_file={path} is not UTF-8 text (byte offset {err.start}); save it as UTF-8"
        ) from None


def write_samples(
    model: Model,
    prompt: str,
    settings: dict[str, Any],
    num_samples: int = 1,
    seed: int = 1337,
    stream: bool = False,
    media: dict[str, Any] | None = None,
    out: TextIO | None = None,
) -> None:
    """Print ``num_samples`` texts (sample ``i`` drawn with ``seed + i``), under a ``--- sample i ---``
    line when there are several; with ``stream``, a language model's text token by token."""
    out = out or sys.stdout
    media = {k: v for k, v in (media or {}).items() if v is not None}
    for i in range(num_samples):
        if num_samples > 1:
            print(f"--- sample {i + 1} ---", file=out)
        if stream and model.kind == LANGUAGE_MODEL and not media:
            print(prompt, end="", file=out, flush=True)
            for piece in model.stream(prompt, seed=seed + i, **settings):
                print(piece, end="", file=out, flush=True)
            print(file=out, flush=True)
        else:
            print(model.generate(prompt, seed=seed + i, **media, **settings)[0], file=out, flush=True)


def interact(
    model: Model,
    settings: dict[str, Any],
    num_samples: int = 1,
    seed: int = 1337,
    stream: bool = False,
    lines: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Read prompts from ``lines`` (standard input), one per line, and print each one's samples,
    until an empty line or end of input; returns how many prompts were answered. A ``> `` prompt
    marker goes to standard error when the input is a terminal."""
    lines = lines or sys.stdin
    answered = 0
    while True:
        if lines.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = lines.readline()
        prompt = line.rstrip("\r\n")
        if not prompt:
            return answered
        write_samples(model, prompt, settings, num_samples, seed, stream, out=out)
        answered += 1


@hydra.main(config_path="conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print generated samples (or answer prompts from standard input, ``interactive=true``); a bad
    setting or file is one message (``HYDRA_FULL_ERROR=1`` for the traceback)."""
    from omniformer.known_warnings import silence_known_warnings
    from omniformer.user_errors import reported_briefly

    silence_known_warnings()
    with reported_briefly():
        run(cfg)


def run(cfg: DictConfig) -> None:
    """``omniformer-generate`` with the composed config ``cfg``."""
    stop = cfg.get("stop")
    stop = [unescape(s) for s in OmegaConf.to_container(stop)] if OmegaConf.is_list(stop) else stop
    stop = unescape(stop) if isinstance(stop, str) else stop
    settings = check_settings(
        cfg.get("max_new_tokens"),
        cfg.get("temperature"),
        cfg.top_k,
        cfg.get("top_p"),
        stop,
        cfg.num_samples,
        cfg.get("context_len"),
    )
    media = {"audio": cfg.get("audio"), "image": cfg.get("image")}
    check_one_media(**media)
    interactive = bool(cfg.get("interactive"))
    prompt = read_prompt(cfg.get("prompt"), cfg.get("prompt_file"))
    if interactive and prompt is not None:
        raise ValueError(
            "interactive=true reads its prompts from standard input; drop prompt= / prompt_file="
        )
    model = load(cfg.ckpt, device=cfg.device, allow_targets=cfg.get("allow_targets"))
    stream = bool(cfg.get("stream"))
    if interactive:
        if model.kind != LANGUAGE_MODEL or any(v is not None for v in media.values()):
            lm = model.kind == LANGUAGE_MODEL
            what = "audio=/image= was given" if lm else f"{model.source} is {KIND_NAMES[model.kind]}"
            raise ValueError(
                f"interactive=true: {what}; only a language model answers prompts typed one per line "
                "(a prefix LM writes the text of one audio=/image= file per command)"
            )
        interact(model, settings, cfg.num_samples, cfg.seed, stream)
        return
    if prompt is None:
        prompt = default_prompt(model, **media)
    write_samples(model, prompt, settings, cfg.num_samples, cfg.seed, stream, media)


if __name__ == "__main__":
    main()

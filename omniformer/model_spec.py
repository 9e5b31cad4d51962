"""What a model folder's ``config.json`` says about its model, derived from a checkpoint and checked.

The body of ``config.json`` (besides the format fields :mod:`omniformer.model_folder` adds)::

    kind: classifier | language_model | prefix_lm
    model: {_target_: omniformer.model.OmniModel, tokenizers: ..., backbone: ..., heads: ...}
    modality: image            # the tokenizer inputs go to
    head: classifier           # the head that scores them
    classes: [...]             # classifier: names in label order
    inputs: {_target_: ...}    # classifier: the data module's config, which reads files for predict
                               # exactly as evaluation does (paths, downloads and caches left out)
    context_len: 256           # language model: the most tokens it sees (the training block size)
    text_modality: text        # prefix LM: the tokenizer of the text written after the prefix
    eos_id: 11                 # prefix LM: the end-of-text id generation stops at
    max_new_tokens: 16         # prefix LM: the longest training text, end of text included

A prefix LM's ``modality`` is its prefix's (``audio`` or ``image``); how it reads files is the
``media.json`` artifact (:mod:`omniformer.prefix_files`), its characters ``vocab.json``.

No optimizer, trainer or training-data state. Building from it follows the same allow-list as a
checkpoint's stored config (:mod:`omniformer.trusted_config`): only omniformer's own classes, the
trusted torchvision transforms and plug-in packages named in ``allow_targets``; anything else is
refused by key and target before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omniformer.trusted_config import (
    FLAG,
    UntrustedConfigError,
    live_interpolations,
    untrusted_targets,
)

CLASSIFIER = "classifier"
LANGUAGE_MODEL = "language_model"
PREFIX_LM = "prefix_lm"
KINDS = (CLASSIFIER, LANGUAGE_MODEL, PREFIX_LM)

#: Task classes (the last part of a task's ``_target_``) a model folder serves, and as what.
TASK_KINDS = {
    "ClassificationTask": CLASSIFIER,
    "LanguageModelingTask": LANGUAGE_MODEL,
    "PrefixLMTask": PREFIX_LM,
}
#: Keys each kind's config.json must hold.
NEEDS = {
    CLASSIFIER: ("model", "modality", "head", "classes"),
    LANGUAGE_MODEL: ("model", "modality", "head"),
    PREFIX_LM: ("model", "modality", "head", "text_modality", "eos_id"),
}

#: Data-module arguments that name where training data lives: left empty in a model folder, and
#: filled with the folder itself when the module is built to read inputs (reading never looks there).
PATH_KEYS = ("root", "path")
#: Data-module arguments that write or read training files: left out of a model folder.
DROPPED_KEYS = ("download", "cache_dir", "vocab_json")


def spec_from_parts(task: Mapping[str, Any], data: Mapping[str, Any] | None, source: str | Path) -> dict:
    """The ``config.json`` body for a checkpoint whose (checked, plain) ``task`` and ``data`` configs
    are given.

    Raises:
        ValueError: the task is neither a classifier nor a language model (naming its class).
    """
    target = str(task.get("_target_", ""))
    kind = TASK_KINDS.get(target.rsplit(".", 1)[-1]) if target.startswith("omniformer.") else None
    if kind is None:
        raise ValueError(
            f"{source} was trained as {target.rsplit('.', 1)[-1] or 'an unknown task'}; model folders "
            f"and omniformer.load serve {', '.join(TASK_KINDS)} models"
        )
    spec: dict[str, Any] = {
        "kind": kind,
        "task": target.rsplit(".", 1)[-1],
        "model": task["net"],
        "modality": task.get("modality", "text"),
        "head": task.get("head", "lm" if kind == LANGUAGE_MODEL else "classifier"),
    }
    if kind == CLASSIFIER:
        classes = task.get("class_names")
        spec["classes"] = list(classes) if classes else [str(i) for i in range(int(task["num_classes"]))]
        spec["inputs"] = input_config(data) if data else None
    elif kind == PREFIX_LM:
        spec["text_modality"] = task.get("text_modality", "text")
        spec["eos_id"] = int(task["eos_id"])
        spec["max_new_tokens"] = int(task["max_new_tokens"])
    else:
        spec["context_len"] = task.get("context_len") or (data or {}).get("block_size")
    return spec


def input_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without what points at training files (:data:`PATH_KEYS`, :data:`DROPPED_KEYS`)."""
    out = {k: v for k, v in data.items() if k not in DROPPED_KEYS}
    out.update({k: None for k in PATH_KEYS if k in out})
    return out


def check_spec(
    spec: Mapping[str, Any],
    allow_targets: Sequence[str] = (),
    source: str | Path | None = None,
    parts: Sequence[str] = ("model",),
) -> None:
    """Refuse a ``config.json`` body that names anything but the allowed classes, or lacks a key.

    ``parts`` are the trees checked: ``model`` when the network is built, ``inputs`` (the data
    module, whose check imports Lightning) only when input files are first read.

    Raises:
        UntrustedConfigError: a ``_target_`` in ``model`` or ``inputs`` that may not be built, or a
            leftover ``${...}`` interpolation (every one named by key and target).
        ValueError: an unknown ``kind`` or a missing key the kind needs.
    """
    where = f"{source}" if source else "config.json"
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind={kind!r}; a model folder's kind is one of {', '.join(KINDS)}")
    for key in NEEDS[kind]:
        if spec.get(key) is None:
            raise ValueError(f"{where}: config.json has no {key!r}, which a {kind} needs")
    if not isinstance(spec["model"], Mapping):
        raise ValueError(f"{where}: model={spec['model']!r} is not a mapping")
    problems: list[str] = []
    for key in parts:
        tree = spec.get(key)
        if tree is not None:
            problems += live_interpolations(tree, key) or untrusted_targets(tree, key, allow_targets)
    if problems:
        allowed = f" (now {FLAG}={list(allow_targets)})" if allow_targets else ""
        raise UntrustedConfigError(
            f"refusing to build the model in {where}: its config.json is data anyone who can write "
            "the folder can edit, so only omniformer's own model and data classes, a fixed list of "
            f"torchvision transforms, and classes of plug-in packages named by {FLAG} are built "
            f"from it{allowed}:\n  " + "\n  ".join(problems) + f"\nIf you trust this folder and it "
            f"uses classes of your own plug-in package, name the package: {FLAG}='[my_package]'"
        )


def build_net(model: Mapping[str, Any]):
    """The :class:`~omniformer.model.OmniModel` a checked ``model`` config describes (eval mode)."""
    from hydra.utils import instantiate

    return instantiate(dict(model)).eval()


def build_input_reader(inputs: Mapping[str, Any], folder: str | Path, artifacts: Mapping[str, str]):
    """The data module a checked ``inputs`` config describes, its empty path keys set to ``folder``
    and the model's artifacts (class order, vocabulary, normalisation) handed to it."""
    from hydra.utils import instantiate

    config = {**inputs, **{k: str(folder) for k in PATH_KEYS if k in inputs and inputs[k] is None}}
    reader = instantiate(config)
    if hasattr(reader, "use_artifacts"):
        reader.use_artifacts(dict(artifacts))
    if not hasattr(reader, "load_inputs"):
        raise ValueError(f"{type(reader).__name__} cannot read input files for prediction")
    return reader


def example_inputs(
    config: Mapping[str, Any], source: str | Path, batch_size: int = 2, seed: int = 0
) -> tuple:
    """A seeded synthetic batch of the input shape of the model ``config`` describes (pixels for an
    image tokenizer, one second of waveform for an audio one, ids for a text one).

    Raises:
        ValueError: a tokenizer whose input shape its config does not state (a plug-in's).
    """
    import torch

    tokenizer = config["model"]["tokenizers"][config["modality"]]
    generator = torch.Generator().manual_seed(seed)
    if "in_channels" in tokenizer and "image_size" in tokenizer:
        size = tokenizer["image_size"]
        height, width = (size, size) if isinstance(size, int) else size
        shape = (batch_size, tokenizer["in_channels"], height, width)
        return (torch.randn(shape, generator=generator),)
    if "sample_rate" in tokenizer:
        return (0.1 * torch.randn(batch_size, int(tokenizer["sample_rate"]), generator=generator),)
    if "vocab_size" in tokenizer:
        length = min(int(config.get("context_len") or 16), 16)
        return (torch.randint(0, int(tokenizer["vocab_size"]), (batch_size, length), generator=generator),)
    raise ValueError(
        f"{source}: cannot make an example input for tokenizer {tokenizer.get('_target_')} "
        "(its config states no image, audio or vocabulary size); give input files instead"
    )

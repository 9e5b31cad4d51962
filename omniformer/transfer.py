"""Backbone transfer: reuse a trained backbone (and chosen tokenizers) from any omniformer checkpoint.

One backbone serves every modality, so a backbone trained on one task can start another — even in
another modality. "Pretrained Transformers as Universal Computation Engines" (Lu et al. 2021)
freezes a language-pretrained GPT-2's attention and MLP blocks and trains only the input layer,
the output layer, positions and the layer norms, and still solves image and bit-sequence tasks;
``freeze=all_but_norms`` reproduces that setting, ``freeze=all`` freezes the norms too.

From the command line, the backbone's config node takes the two keys::

    omniformer-train task=image_classification data=mnist \\
        model.backbone.init_from=outputs/.../text.ckpt model.backbone.freeze=all_but_norms

``conf/model/_backbone.yaml`` builds the backbone with :func:`build_backbone`, which loads only
``backbone.*`` tensors (``torch.load(weights_only=True)`` through
:func:`omniformer.checkpoint.load_checkpoint`) and logs which tensors were loaded, which of the
checkpoint's were skipped and which of the model's are newly initialised, then the count of trainable
parameters. :func:`from_checkpoint` does the same for any other part (a tokenizer, a head), and
:func:`load_pretrained` for several parts of a built :class:`~omniformer.model.OmniModel` at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from omniformer.backbone import Backbone, RMSNorm
from omniformer.checkpoint import SECTION, clean_state_dict, load_checkpoint

log = logging.getLogger("omniformer")

FreezeKind = Literal["none", "all", "all_but_norms"]
_NORMS = (nn.LayerNorm, RMSNorm)


@dataclass
class TransferReport:
    """What a transfer did, tensor by tensor.

    Attributes:
        source: the checkpoint read.
        loaded: ``model key ← checkpoint key`` names of the tensors copied.
        skipped: checkpoint tensors not copied, with the reason (``key → reason``).
        initialised: the model's tensors that keep their fresh initialisation.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    loaded_parameters: int = 0

    def summary(self, max_names: int = 8) -> str:
        """A few readable lines: counts, and the names grouped by their first two key parts."""
        lines = [
            f"transfer from {self.source}:",
            f"  loaded      {len(self.loaded)} tensors ({self.loaded_parameters:,} values): "
            f"{_grouped(self.loaded, max_names)}",
            f"  skipped     {len(self.skipped)} checkpoint tensors: "
            f"{_grouped(list(self.skipped), max_names)}",
            f"  initialised {len(self.initialised)} model tensors anew: "
            f"{_grouped(self.initialised, max_names)}",
        ]
        return "\n".join(lines)


def _grouped(names: Sequence[str], max_names: int) -> str:
    """``backbone.blocks.* (48), backbone.norm.* (2)`` — names grouped by their first two parts."""
    if not names:
        return "none"
    groups: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        key = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
        groups[key] = groups.get(key, 0) + 1
    shown = [f"{k} ({n})" if n > 1 else k for k, n in list(groups.items())[:max_names]]
    return ", ".join(shown) + (
        f", ... ({len(groups) - max_names} more groups)" if len(groups) > max_names else ""
    )


def parse_freeze(freeze: bool | str | None) -> FreezeKind:
    """``true``/``all`` → ``all``; ``false``/``none``/``null`` → ``none``; ``all_but_norms`` as is."""
    if freeze is None or freeze is False:
        return "none"
    if freeze is True:
        return "all"
    text = str(freeze).strip().lower()
    if text in ("none", "false", "no", "off"):
        return "none"
    if text in ("all", "true", "yes", "on"):
        return "all"
    if text == "all_but_norms":
        return "all_but_norms"
    raise ValueError(
        f"model.backbone.freeze={freeze!r}: choose false (train everything), true / all (freeze the whole "
        "backbone) or all_but_norms (freeze attention and MLPs, train the norms; Lu et al. 2021)"
    )


def freeze_module(module: nn.Module, freeze: bool | str | None) -> tuple[int, int]:
    """Stop gradients to ``module``'s parameters as ``freeze`` says; return ``(trainable, total)`` values.

    ``all_but_norms`` keeps every LayerNorm / RMSNorm gain and bias trainable. Frozen parameters get
    ``requires_grad=False``, so the optimizer never receives them (and weight decay never moves them).
    """
    kind = parse_freeze(freeze)
    if kind != "none":
        for sub in module.modules():
            keep = kind == "all_but_norms" and isinstance(sub, _NORMS)
            for param in sub.parameters(recurse=False):
                param.requires_grad_(keep)
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


def _component_prefixes(state: Mapping[str, Any], part: str) -> list[str]:
    """Key prefixes under which ``part`` (e.g. ``backbone``, ``tokenizers.text``) appears in ``state``."""
    marker = part + "."
    prefixes = set()
    for key in state:
        if key.startswith(marker):
            prefixes.add("")
        index = key.find("." + marker)
        while index >= 0:
            prefixes.add(key[: index + 1])
            index = key.find("." + marker, index + 1)
    return sorted(prefixes, key=len)


def _source_config(checkpoint: Mapping[str, Any]) -> str:
    """``model.dim=128 model.depth=4 ...`` of the checkpoint's run, for error messages."""
    model = ((checkpoint.get(SECTION) or {}).get("config") or {}).get("model") or {}
    keys = ("dim", "depth", "heads", "mlp_ratio", "mlp", "norm", "bias")
    shown = " ".join(f"model.{k}={model[k]}" for k in keys if k in model)
    return f" (the checkpoint was trained with {shown})" if shown else ""


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of an omniformer checkpoint (weights-only load, ``_orig_mod.`` removed) and the file,
    or of a model folder (``model.safetensors``; its ``config.json`` in the checkpoint's place)."""
    if Path(path).expanduser().is_dir():
        from omniformer.model_folder import read_config, read_tensors

        config = read_config(path)
        backbone = (config.get("model") or {}).get("backbone") or {}
        return read_tensors(path, config), {SECTION: {"config": {"model": backbone}}}
    checkpoint = load_checkpoint(path)
    state = clean_state_dict(checkpoint["state_dict"])
    return state, checkpoint


def load_part(
    module: nn.Module,
    path: str | Path,
    part: str = "backbone",
    state: Mapping[str, torch.Tensor] | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> TransferReport:
    """Copy the checkpoint's ``<part>.*`` tensors into ``module`` (the model's ``part``); report.

    ``part`` is a dotted path inside the checkpoint's model (``backbone``, ``tokenizers.text``,
    ``heads.lm``); the checkpoint's task prefix (``net.``) is found by itself. Every tensor of
    ``module`` must be in the checkpoint with the same shape and every checkpoint tensor of the part
    must exist in ``module``: a partial load would train silently on a different network.

    Raises:
        ValueError: the checkpoint has no ``part``, a tensor is missing or extra (naming them), or a
            shape differs (naming the tensor and both shapes).
    """
    if state is None or checkpoint is None:
        state, checkpoint = read_state(path)
    prefixes = _component_prefixes(state, part)
    if not prefixes:
        parts = sorted({".".join(k.split(".")[1:3]) for k in state if "." in k})
        raise ValueError(f"{path}: the checkpoint has no '{part}' tensors (it has {', '.join(parts[:12])})")
    if len(prefixes) > 1:
        raise ValueError(
            f"{path}: '{part}' appears under several prefixes {prefixes}; cannot tell which to load"
        )
    prefix = prefixes[0] + part + "."
    source = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    target = module.state_dict()
    missing = [k for k in target if k not in source]
    extra = [k for k in source if k not in target]
    where = _source_config(checkpoint)
    if missing or extra:
        raise ValueError(
            f"{path}: the checkpoint's {part} does not have this model's structure{where}: "
            + (
                f"missing from the checkpoint: {', '.join(f'{part}.{k}' for k in missing[:6])}; "
                if missing
                else ""
            )
            + (f"not in this model: {', '.join(f'{part}.{k}' for k in extra[:6])}; " if extra else "")
            + "use the same model.* settings as the checkpoint's run"
        )
    for key, tensor in source.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise ValueError(
                f"{path}: tensor {part}.{key} has shape {tuple(tensor.shape)} in the checkpoint but "
                f"{tuple(target[key].shape)} in this model{where}; use the same model.* settings"
            )
    module.load_state_dict(source, strict=True)
    report = TransferReport(str(path))
    report.loaded = [f"{part}.{k}" for k in source]
    report.loaded_parameters = sum(int(v.numel()) for v in source.values())
    report.skipped = {k: "not part of the transfer" for k in state if not k.startswith(prefix)}
    return report


def from_checkpoint(
    module: nn.Module, init_from: str | None = None, part: str = "backbone", freeze: bool | str | None = False
) -> nn.Module:
    """``module`` with its weights loaded from the checkpoint's ``part`` (when ``init_from`` is set)
    and frozen as ``freeze`` says; logs the transfer report and the trainable parameter count.

    Usable as a Hydra ``_target_`` around any part, e.g. a pretrained text tokenizer::

        tokenizers:
          text:
            _target_: omniformer.transfer.from_checkpoint
            init_from: outputs/lm/checkpoints/best.ckpt
            part: tokenizers.text
            module: {_target_: omniformer.tokenizers.TextEmbedding, vocab_size: ..., dim: ...}

    (the vocabulary must be the checkpoint's: ``data.vocab_json`` or the same corpus and settings).
    """
    name = part.replace(".", "/")
    if init_from:
        report = load_part(module, init_from, part)
        log.info(
            "%s\n  (every other part of the new model — tokenizers, heads — starts from its own "
            "initialisation unless it is loaded too)",
            report.summary(),
        )
    kind = parse_freeze(freeze)
    trainable, total = freeze_module(module, kind)
    if kind != "none" and not init_from:
        log.info("%s: freezing a randomly initialised %s (freeze=%s, no init_from)", name, part, kind)
    log.info(
        "%s: %s of %s parameters trainable (freeze=%s%s)",
        name,
        f"{trainable:,}",
        f"{total:,}",
        kind,
        f", from {init_from}" if init_from else "",
    )
    return module


def build_backbone(
    init_from: str | None = None,
    freeze: bool | Literal["none", "all", "all_but_norms"] | None = False,
    **backbone_args: Any,
) -> Backbone:
    """A :class:`~omniformer.backbone.Backbone` built from ``backbone_args``, optionally initialised
    from a checkpoint's backbone and frozen (the ``model.backbone`` config node's target).

    Args:
        init_from: an omniformer checkpoint or model folder (any task, any modality); only its
            ``backbone.*`` tensors are read. ``null`` keeps the fresh initialisation.
        freeze: ``false`` / ``none`` (train everything), ``true`` / ``all`` (no backbone parameter
            trains) or ``all_but_norms`` (only the backbone's LayerNorm / RMSNorm parameters train,
            as in Lu et al. 2021).
        **backbone_args: the :class:`Backbone` arguments (``dim``, ``depth``, ``heads``...).

    Raises:
        ValueError: a shape or structure mismatch (naming the tensor and both shapes), a bad
            ``freeze`` value, or a checkpoint that is not an omniformer checkpoint.
        FileNotFoundError: ``init_from`` does not exist.
    """
    parse_freeze(freeze)  # a bad value fails before any work
    if init_from:
        path = Path(str(init_from)).expanduser()
        if not path.is_file() and not path.is_dir():
            raise FileNotFoundError(
                f"model.backbone.init_from: checkpoint {path} does not exist (give an omniformer-train "
                ".ckpt or a model folder written by omniformer-export)"
            )
    return from_checkpoint(Backbone(**backbone_args), init_from or None, "backbone", freeze)


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    parts: Iterable[str] = ("backbone",),
    freeze: Mapping[str, bool | str] | None = None,
) -> TransferReport:
    """Load several parts (``backbone``, ``tokenizers.text``...) of a checkpoint into an ``OmniModel``.

    The report lists every model tensor not loaded as newly initialised (tokenizers and heads of the
    new task), and every checkpoint tensor not used as skipped. ``freeze`` maps a part to its freeze
    option. Returns the report (also logged with the model's trainable parameter count).
    """
    state, checkpoint = read_state(path)
    parts = list(parts)
    report = TransferReport(str(path))
    used: set[str] = set()
    for part in parts:
        module = model.get_submodule(part)
        partial = load_part(module, path, part, state=state, checkpoint=checkpoint)
        report.loaded += partial.loaded
        report.loaded_parameters += partial.loaded_parameters
        used |= {k for k in state if k not in partial.skipped}
    report.skipped = {k: "not one of the parts loaded" for k in state if k not in used}
    loaded = set(report.loaded)
    report.initialised = [k for k in model.state_dict() if k not in loaded]
    for part, option in (freeze or {}).items():
        freeze_module(model.get_submodule(part), option)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("%s\n  trainable parameters: %s of %s", report.summary(), f"{trainable:,}", f"{total:,}")
    return report


def without_init_from(config: Any) -> Any:
    """A copy of a (resolved) config with every ``build_backbone`` node's ``init_from`` set to ``None``.

    A checkpoint's own weights replace the pretrained ones, so evaluation, prediction and resuming
    need not (and, once the pretrained file is moved, could not) read ``init_from`` again.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    container = (
        OmegaConf.to_container(config, resolve=True)
        if isinstance(config, (DictConfig, ListConfig))
        else config
    )

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {key: walk(value) for key, value in node.items()}
            if node.get("_target_") == f"{__name__}.build_backbone" and node.get("init_from"):
                node["init_from"] = None
            return node
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    cleaned = walk(container)
    return OmegaConf.create(cleaned) if isinstance(config, (DictConfig, ListConfig)) else cleaned

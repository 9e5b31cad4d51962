"""Export a trained task as a deployable graph, checked against eager PyTorch before it is kept."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from omniformer.graph_export.check import (
    check_classifier,
    check_language_model,
    load_runner,
    refuse_if_different,
)
from omniformer.graph_export.specs import graph_spec
from omniformer.graph_export.writers import FORMATS, check_format, require_onnx, write_graph
from omniformer.model import OmniModel

TOLERANCE = 1e-4


@dataclass
class GraphExportReport:
    """What :func:`export_net` wrote and how closely the written graph matches eager PyTorch.

    Attributes:
        path: the graph file.
        fmt: ``"onnx"`` or ``"torch_export"``.
        kind: ``"classifier"`` or ``"language_model"``.
        modality: the tokenizer the graph reads through.
        head: the head it ends in.
        input_names: the graph's inputs, in order.
        output_names: its outputs, in order.
        dynamic_axes: ``{input: {axis: name}}`` of the axes that may change size.
        max_abs_diff: the largest difference from eager PyTorch per output, over every check.
        checks: one line per check that ran.
        seconds: time taken to export and check.
    """

    path: Path
    fmt: str
    kind: str
    modality: str
    head: str
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    max_abs_diff: dict[str, float]
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0


def export_net(
    net: OmniModel,
    kind: str,
    modality: str,
    head: str,
    out: str | Path,
    fmt: str,
    example_inputs: Sequence[Tensor] | None = None,
    *,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
    atol: float = TOLERANCE,
) -> GraphExportReport:
    """Write ``net``'s ``head`` reading ``modality`` to ``out`` as an ``fmt`` graph and check it.

    Args:
        net: the model (e.g. ``task.net`` of :func:`omniformer.checkpoint.task_from_checkpoint`).
        kind: ``"classifier"`` (inputs → logits) or ``"language_model"`` (ids and KV cache → logits
            and the new cache).
        modality: the tokenizer that reads the inputs (``task.modality``).
        head: the head (``task.head``).
        out: the file to write; an existing file is replaced only once the new graph has passed.
        fmt: ``"onnx"`` (``torch.onnx.export(dynamo=True)``, checked in onnxruntime) or
            ``"torch_export"`` (a ``.pt2`` exported program).
        example_inputs: real inputs to trace with and check on, as the graph takes them:
            ``(pixels,)``, ``(waveform, lengths)``, ``(ids, lengths)`` for a text classifier, or
            ``(prompt_ids,)`` for a language model. Random inputs of the right shape otherwise.
        pixel_mean: with ``pixel_std``, an image graph normalises inside and takes ``[0, 1]`` pixels.
        pixel_std: see ``pixel_mean``.
        atol: the largest absolute difference from eager PyTorch accepted on any output.

    Raises:
        ValueError: an unknown ``fmt`` or ``kind`` (the known ones listed).
        ImportError: ONNX export without onnx / onnxscript / onnxruntime (names the extra).
        GraphExportError: the model cannot be traced (names the module and the op).
        GraphMismatchError: the graph disagrees with eager PyTorch (``out`` is deleted).
    """
    check_format(fmt)
    if fmt == "onnx":
        require_onnx()
    out = Path(out)
    start = time.perf_counter()
    was_training = net.training
    net.eval()
    try:
        spec = graph_spec(net, kind, modality, head, example_inputs, pixel_mean, pixel_std)
        with torch.no_grad():  # eager first: tokenizers fill their position caches with real tensors
            (spec.reference or spec.module)(*spec.example_inputs)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f"{out.stem}.partial{FORMATS[fmt]}")  # .pt2 loads only as *.pt2
        write_graph(spec, partial, fmt)
        try:
            run = load_runner(partial, fmt)
            if kind == "language_model":
                prompt = spec.check_inputs[0][0] if example_inputs is not None else spec.example_inputs[0]
                diffs, checks = check_language_model(spec, run, prompt, modality, head)
            else:
                diffs, checks = check_classifier(spec, run)
            refuse_if_different(partial, fmt, diffs, checks, atol)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)
    finally:
        net.train(was_training)
    return GraphExportReport(
        path=out,
        fmt=fmt,
        kind=kind,
        modality=modality,
        head=head,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        dynamic_axes=spec.dynamic_axes,
        max_abs_diff=diffs,
        checks=checks,
        seconds=time.perf_counter() - start,
    )


def export_graph(model: Any, out: str | Path, fmt: str, **options: Any) -> GraphExportReport:
    """Export a loaded model (``omniformer.load``) as a checked ``fmt`` graph at ``out``.

    Reads ``model.net``, ``model.kind`` and the task's modality and head: ``model.modality`` /
    ``model.head`` if present, else ``model.config["modality"]`` / ``model.config["head"]`` (also
    under ``config["task"]``); the head defaults to ``classifier`` or ``lm`` by kind. ``options`` go
    to :func:`export_net` (``example_inputs``, ``pixel_mean``, ``pixel_std``, ``atol``).
    """
    check_format(fmt)
    kind = model.kind
    modality = _task_setting(model, "modality", None)
    head = _task_setting(model, "head", "lm" if kind == "language_model" else "classifier")
    return export_net(model.net, kind, modality, head, out, fmt, **options)


def _task_setting(model: Any, key: str, default: str | None) -> str:
    """``model.<key>``, else ``model.config[key]`` or ``model.config["task"][key]``, else ``default``."""
    value = getattr(model, key, None)
    config = getattr(model, "config", None) or {}
    if value is None and key in config:
        value = config[key]
    if value is None and isinstance(config.get("task"), dict):
        value = config["task"].get(key)
    if value is None:
        value = default
    if value is None:
        raise ValueError(
            f"cannot tell the model's {key}: it has no .{key} attribute and its config has no "
            f"{key!r} (nor task.{key})"
        )
    return str(value)

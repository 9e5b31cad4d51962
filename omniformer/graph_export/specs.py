"""What a graph of each kind is: its wrapper module, input and output names, dynamic axes and inputs.

:func:`graph_spec` picks the wrapper of :mod:`omniformer.graph_export.graphs` for a task (by its kind
and the class of its tokenizer) and describes the graph: names of the inputs and outputs, which axes
are dynamic (``torch.export.Dim``), example inputs to trace with and differently shaped inputs to
check with (so a graph that silently fixed its batch size is caught).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim

from omniformer.graph_export.graphs import (
    AudioClassifierGraph,
    GenericClassifierGraph,
    ImageClassifierGraph,
    LanguageModelGraph,
    TextClassifierGraph,
)
from omniformer.model import OmniModel

KINDS = ("classifier", "language_model")


@dataclass
class GraphSpec:
    """A wrapper ready to export and how to call it.

    Attributes:
        module: the wrapper (an ``nn.Module`` with tensor-only inputs and outputs).
        input_names: names of the flattened inputs (ONNX input names).
        output_names: names of the flattened outputs.
        example_inputs: positional arguments to trace with.
        dynamic_shapes: ``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export``.
        dynamic_axes: human-readable ``{input name: {axis: dim name}}`` for the report.
        check_inputs: further argument tuples of other shapes the exported graph must also match on.
        reference: eager PyTorch on the same arguments, through the model's own path (``net(...)``),
            not the wrapper; ``None`` = the wrapper itself.
    """

    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    example_inputs: tuple
    dynamic_shapes: Any
    dynamic_axes: dict[str, dict[int, str]]
    check_inputs: list[tuple] = field(default_factory=list)
    reference: Callable[..., Any] | None = None


def graph_spec(
    net: OmniModel,
    kind: str,
    modality: str,
    head: str,
    example_inputs: Sequence[Tensor] | None = None,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
) -> GraphSpec:
    """The :class:`GraphSpec` of ``net``'s ``head`` reading ``modality``, as a ``kind`` graph.

    ``example_inputs`` (the wrapper's arguments, e.g. ``(pixels,)`` or ``(waveform, lengths)``) are
    traced with and checked on; without them, random inputs of the tokenizer's shape are made.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a graph kind; choose {' or '.join(map(repr, KINDS))}")
    if modality not in net.tokenizers:
        raise KeyError(f"no tokenizer for modality {modality!r}; configured: {sorted(net.tokenizers)}")
    if head not in net.heads:
        raise KeyError(f"no head named {head!r}; configured: {sorted(net.heads)}")
    tokenizer = net.tokenizers[modality]
    if kind == "language_model":
        return _language_model(net, modality, head, example_inputs)
    make = {
        "ImagePatchTokenizer": lambda: _image(net, modality, head, pixel_mean, pixel_std),
        "AudioSpectrogramTokenizer": lambda: _audio(net, modality, head),
        "TextEmbedding": lambda: _text(net, modality, head),
    }.get(type(tokenizer).__name__)
    if make is not None:
        spec = make()
    elif example_inputs is not None and len(example_inputs) == 1:
        batch = Dim("batch")
        spec = GraphSpec(
            GenericClassifierGraph(net, modality, head),
            ["inputs"],
            ["logits"],
            tuple(example_inputs),
            {"inputs": {0: batch}},
            {"inputs": {0: "batch"}},
            reference=lambda inputs: net(modality, head, inputs),
        )
    else:
        raise ValueError(
            f"no graph inputs are known for the {type(tokenizer).__name__} tokenizer of {modality!r}: "
            "pass example_inputs (one tensor, as that tokenizer reads it)"
        )
    if example_inputs is not None:
        spec.check_inputs.insert(0, spec.example_inputs)
        spec.example_inputs = tuple(example_inputs)
    return spec


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _normalised(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """``images`` normalised per channel as the evaluation transforms do (unchanged without statistics)."""
    if mean is None or std is None:
        return images
    return (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _image(net, modality, head, mean, std) -> GraphSpec:
    tokenizer, gen = net.tokenizers[modality], _generator()
    height, width = tokenizer.image_size
    # Normalised pixels, or [0, 1] ones where the graph normalises itself.
    draw = torch.rand if mean is not None and std is not None else torch.randn
    pixels: Callable[[int], Tensor] = lambda b: draw(b, tokenizer.in_channels, height, width, generator=gen)
    return GraphSpec(
        ImageClassifierGraph(net, modality, head, mean, std),
        ["pixels"],
        ["logits"],
        (pixels(2),),
        {"pixels": {0: Dim("batch")}},
        {"pixels": {0: "batch"}},
        [(pixels(3),)],
        reference=lambda images: net(modality, head, _normalised(images, mean, std)),
    )


def _audio(net, modality, head) -> GraphSpec:
    tokenizer, gen = net.tokenizers[modality], _generator()
    rate = tokenizer.sample_rate

    def clips(lengths: list[int]) -> tuple[Tensor, Tensor]:
        waves = 0.1 * torch.randn(len(lengths), max(lengths), generator=gen)
        return waves, torch.tensor(lengths)

    # Lengths in samples are data-dependent in the front end (frames = samples // hop + 1), so the
    # axis is Dim.DYNAMIC: torch.export derives its range.
    return GraphSpec(
        AudioClassifierGraph(net, modality, head),
        ["waveform", "lengths"],
        ["logits"],
        clips([rate // 2, rate // 3]),
        ({0: Dim.DYNAMIC, 1: Dim.DYNAMIC}, {0: Dim.DYNAMIC}),
        {"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}},
        [clips([rate // 4, rate // 2 + 123, rate // 5])],
        reference=lambda waveform, lengths: net(modality, head, waveform, lengths=lengths),
    )


def _text(net, modality, head) -> GraphSpec:
    tokenizer, gen = net.tokenizers[modality], _generator()

    def batch(lengths: list[int]) -> tuple[Tensor, Tensor]:
        ids = torch.randint(0, tokenizer.vocab_size, (len(lengths), max(lengths)), generator=gen)
        return ids, torch.tensor(lengths)

    batch_dim, tokens_dim = Dim.DYNAMIC, Dim.DYNAMIC
    return GraphSpec(
        TextClassifierGraph(net, modality, head),
        ["ids", "lengths"],
        ["logits"],
        batch([7, 5]),
        ({0: batch_dim, 1: tokens_dim}, {0: batch_dim}),
        {"ids": {0: "batch", 1: "tokens"}, "lengths": {0: "batch"}},
        [batch([3, 9, 4])],
        reference=lambda ids, lengths: net(modality, head, ids, lengths=lengths),
    )


def _language_model(net, modality, head, example_inputs) -> GraphSpec:
    tokenizer, backbone = net.tokenizers[modality], net.backbone
    depth, heads, head_dim = backbone.depth, backbone.heads, backbone.dim // backbone.heads
    gen = _generator()

    def call(batch: int, new: int, past: int) -> tuple:
        ids = torch.randint(0, tokenizer.vocab_size, (batch, new), generator=gen)
        cache = [torch.randn(batch, heads, past, head_dim, generator=gen) for _ in range(2 * depth)]
        return ids, torch.tensor(past), cache[:depth], cache[depth:]

    batch, tokens, past = Dim("batch"), Dim("tokens"), Dim("past")
    cache_axes = {0: batch, 2: past}
    layers = range(depth)
    names = ["ids", "position_offset", *(f"past_key_{i}" for i in layers)]
    names += [f"past_value_{i}" for i in layers]
    outputs = ["logits", *(f"present_key_{i}" for i in layers), *(f"present_value_{i}" for i in layers)]
    axes: dict[str, dict[int, str]] = {"ids": {0: "batch", 1: "tokens"}}
    axes |= {name: {0: "batch", 2: "past"} for name in names[2:]}
    spec = GraphSpec(
        LanguageModelGraph(net, modality, head),
        names,
        outputs,
        call(2, 3, 4),
        ({0: batch, 1: tokens}, None, [cache_axes] * depth, [cache_axes] * depth),
        axes,
        [call(3, 1, 0), call(1, 5, 0), call(3, 1, 6)],
    )
    if example_inputs is not None:  # a prompt: B×T ids
        (ids,) = example_inputs
        spec.check_inputs.insert(0, (ids, torch.tensor(0), *call(ids.shape[0], 0, 0)[2:]))
    return spec

"""Running a written graph and comparing it with eager PyTorch: the check every export must pass.

ONNX files run in onnxruntime, ``.pt2`` files through ``torch.export.load(...).module()``. A
classifier is compared on the inputs it was traced with and on inputs of other shapes (another
batch size, other lengths). A language model decodes 10 steps with its cache going through the
graph, against :class:`~omniformer.backbone.KVCache` decoding in eager PyTorch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

from omniformer.graph_export.specs import GraphSpec
from omniformer.graph_export.writers import GraphExportError

Runner = Callable[[tuple], list[Tensor]]
DECODE_STEPS = 10


class GraphMismatchError(GraphExportError):
    """The exported graph's outputs differ from eager PyTorch by more than the tolerance."""


def load_runner(path: Path, fmt: str) -> Runner:
    """A function that runs the graph at ``path`` on the wrapper's arguments; returns the flat outputs."""
    if fmt == "torch_export":
        with warnings.catch_warnings():  # weight-grouping notes of the .pt2 loader
            warnings.simplefilter("ignore")
            module = torch.export.load(str(path)).module()
        return lambda args: [t.detach() for t in tree_leaves(module(*args))]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(args: tuple) -> list[Tensor]:
        leaves = tree_leaves(args)
        return [torch.from_numpy(np.asarray(a)) for a in session.run(None, feeds(names, leaves))]

    run.input_names = names  # type: ignore[attr-defined]
    return run


def feeds(names: Sequence[str], leaves: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """onnxruntime's feed dict: the flattened arguments by input name (inputs the graph dropped skipped)."""
    return {name: leaf.detach().cpu().numpy() for name, leaf in zip(names, leaves)}


def max_differences(expected: Sequence[Tensor], actual: Sequence[Tensor], names: Sequence[str]) -> dict:
    """Max absolute difference per output name (shape mismatches count as infinite)."""
    if len(expected) != len(actual):
        raise GraphMismatchError(f"the graph returned {len(actual)} outputs, eager PyTorch {len(expected)}")
    diffs = {}
    for name, want, got in zip(names, expected, actual):
        if tuple(want.shape) != tuple(got.shape):
            diffs[name] = float("inf")
        else:
            diffs[name] = float((want.detach().float() - got.float()).abs().max()) if want.numel() else 0.0
    return diffs


@torch.no_grad()
def check_classifier(spec: GraphSpec, run: Runner) -> tuple[dict[str, float], list[str]]:
    """Compare the graph with eager PyTorch on every input set of ``spec``: ``(diffs, checks)``."""
    reference = spec.reference or spec.module
    worst: dict[str, float] = {}
    checks = []
    for args in [spec.example_inputs, *spec.check_inputs]:
        expected = tree_leaves(reference(*args))
        diffs = max_differences(expected, run(args), spec.output_names)
        shapes = " + ".join("×".join(map(str, a.shape)) or "scalar" for a in tree_leaves(args))
        checks.append(f"inputs {shapes}: max abs diff {max(diffs.values()):.3g}")
        _keep_worst(worst, diffs)
    return worst, checks


@torch.no_grad()
def check_language_model(
    spec: GraphSpec, run: Runner, prompt: Tensor, modality: str, head: str, steps: int = DECODE_STEPS
) -> tuple[dict[str, float], list[str]]:
    """Decode ``steps`` greedy tokens after ``prompt`` through the graph (its cache fed back in)
    and in eager PyTorch (``net`` with a :class:`KVCache`); compare logits at every call and the
    final cache. Also compares the graph with the wrapper on the spec's other input shapes."""
    net = spec.module.net
    depth = net.backbone.depth
    prompt = prompt[:, -max(1, net.backbone.max_seq_len - steps) :]
    batch, heads = prompt.shape[0], net.backbone.heads
    cache = net.backbone.new_cache(batch, prompt.shape[1] + steps)
    empty = torch.zeros(batch, heads, 0, net.backbone.dim // heads)
    logits = net(modality, head, prompt, causal=True, cache=cache)
    out = run((prompt, torch.tensor(0), [empty] * depth, [empty] * depth))
    worst: dict[str, float] = {}
    checks = []
    diffs = max_differences([logits], out[:1], ["logits"])
    for _ in range(steps):
        ids = logits[:, -1:].argmax(dim=-1)
        past = cache.length
        logits = net(modality, head, ids, causal=True, cache=cache, start_pos=past)
        out = run((ids, torch.tensor(past), out[1 : 1 + depth], out[1 + depth :]))
        step_diffs = max_differences([logits], out[:1], ["logits"])
        diffs["logits"] = max(diffs["logits"], step_diffs["logits"])
    final = [cache.keys[i, :, :, : cache.length] for i in range(depth)]
    final += [cache.values[i, :, :, : cache.length] for i in range(depth)]
    diffs |= max_differences(final, out[1:], spec.output_names[1:])
    checks.append(
        f"prompt {batch}×{prompt.shape[1]} then {steps} cached decode steps: max abs diff "
        f"{max(diffs.values()):.3g}"
    )
    _keep_worst(worst, diffs)
    more, more_checks = check_classifier(spec, run)  # other batch, new-token and past lengths
    for name, value in more.items():
        worst[name] = max(worst.get(name, 0.0), value)
    return worst, checks + more_checks


def _keep_worst(worst: dict[str, float], diffs: dict[str, float]) -> None:
    for name, value in diffs.items():
        worst[name] = max(worst.get(name, 0.0), value)


def refuse_if_different(
    path: Path, fmt: str, diffs: dict[str, float], checks: list[str], atol: float
) -> None:
    """Delete ``path`` and raise :class:`GraphMismatchError` when any output differs by more than ``atol``."""
    name, worst = max(diffs.items(), key=lambda item: item[1])
    if worst <= atol:
        return
    path.unlink(missing_ok=True)
    raise GraphMismatchError(
        f"the exported {fmt} graph disagrees with eager PyTorch: output {name!r} differs by up to "
        f"{worst:.3g} (max abs difference; allowed {atol:g}), so {path} was deleted. Checks: "
        + "; ".join(checks)
    )

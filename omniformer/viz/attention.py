"""Where an image classifier looks: attention rollout over patches, overlaid on a few images.

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): each block's
attention, averaged over heads and mixed half-and-half with the identity for the residual path, is
multiplied through the depth of the model. The row of the pooled output (the CLS token, or the mean
over patch tokens for mean pooling) then says how much each input patch contributes.

Training attends through fused SDPA kernels that never materialise the weights; the backbone computes
them explicitly when asked (``return_attention=True``), and the rollout reads those. Drawn with
matplotlib's object API on the Agg canvas (no display, no global ``pyplot`` state).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FIGURE_NAME = "attention_rollout.png"


@torch.no_grad()
def attention_rollout(task, images: Tensor) -> tuple[Tensor, Tensor]:
    """Patch relevance (``B×rows×cols``, each map summing to 1) and class logits for ``images``.

    ``task`` is a classification task whose ``modality`` tokenizer is an image patch tokenizer.
    """
    net = task.net
    tokenizer = net.tokenizers[task.modality]
    if not hasattr(tokenizer, "grid_for"):
        raise TypeError(
            f"attention maps need an image patch tokenizer; {task.modality!r} is {type(tokenizer).__name__}"
        )
    grid = tokenizer.grid_for(*images.shape[-2:])
    prefix = 1 if tokenizer.has_cls else 0
    pool = getattr(net.heads[task.head], "pool", "mean")
    tokens = tokenizer(images)
    stream, attention = net.backbone(tokens, return_attention=True)
    logits = net.heads[task.head](stream, tokens)
    captured = [weights.mean(dim=1) for weights in attention]  # averaged over heads: B×N×N
    n = captured[0].shape[-1]
    eye = torch.eye(n, device=captured[0].device)
    rollout = eye.expand_as(captured[0])
    for weights in captured:
        mixed = 0.5 * weights + 0.5 * eye  # the residual path carries half of each block's output
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    if pool == "cls" and prefix:
        relevance = rollout[:, 0, prefix:]
    else:
        relevance = rollout[:, prefix:, prefix:].mean(dim=1)
    relevance = relevance / relevance.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return relevance.reshape(-1, *grid), logits


def _display(image: Tensor) -> np.ndarray:
    """A normalised ``C×H×W`` image as ``H×W(×3)`` in [0, 1], each channel contrast-stretched."""
    image = image.float()
    low = image.amin(dim=(1, 2), keepdim=True)
    high = image.amax(dim=(1, 2), keepdim=True)
    image = (image - low) / (high - low).clamp_min(1e-6)
    return (image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)).numpy()


def save_attention_maps(
    task, batch: Sequence[Tensor], class_names: Sequence[str], out_dir: str | Path, count: int = 8
) -> list[Path]:
    """Draw up to ``count`` images of ``batch`` with their attention rollout; return the PNG path.

    Top row: the images with true and predicted label (green when right, red when wrong) and the
    predicted probability; bottom row: the same images with patch relevance overlaid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    inputs, labels = batch[0], batch[-1]
    if inputs.ndim != 4:
        raise ValueError(f"attention maps need a B×C×H×W image batch, got shape {tuple(inputs.shape)}")
    inputs, labels = inputs[:count], labels[:count]
    was_training = task.training
    task.eval()
    try:
        relevance, logits = attention_rollout(task, inputs)
    finally:
        task.train(was_training)
    probs = logits.float().softmax(dim=-1).cpu()
    inputs, labels, relevance = inputs.cpu(), labels.cpu(), relevance.cpu()
    height, width = inputs.shape[-2:]

    def name(index: int) -> str:
        text = class_names[index] if index < len(class_names) else str(index)
        return text if len(text) <= 14 else text[:13] + "…"

    n = inputs.shape[0]
    figure = Figure(figsize=(1.9 * n, 4.3), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, n, squeeze=False)
    for i in range(n):
        image = _display(inputs[i])
        cmap = "gray" if image.ndim == 2 else None
        predicted = int(probs[i].argmax())
        truth = int(labels[i])
        top, bottom = axes[0][i], axes[1][i]
        top.imshow(image, cmap=cmap, interpolation="nearest")
        top.set_title(
            f"true {name(truth)}\npred {name(predicted)} ({probs[i, predicted]:.2f})",
            fontsize=8,
            color="tab:green" if predicted == truth else "tab:red",
        )
        # Dimmed image under the patch relevance, drawn patch by patch (nearest: one cell per token).
        bottom.imshow(image * 0.45, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        bottom.imshow(
            relevance[i].numpy(),
            cmap="inferno",
            alpha=0.6,
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            interpolation="nearest",
        )
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    axes[1][0].set_ylabel("attention rollout", fontsize=8)
    figure.suptitle("Where the model looks (attention rollout over patches)", fontsize=10)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FIGURE_NAME
    tmp = out / f".{FIGURE_NAME}.{os.getpid()}.tmp"
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return [path]

"""Confusion-matrix picture for classification results."""

from __future__ import annotations

from pathlib import Path

import torch


def save_confusion_matrix(matrix: torch.Tensor, class_names: list[str], path: str | Path) -> Path:
    """Draw ``matrix`` (true × predicted counts) with row-normalised colours and counts; save as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.cpu().numpy()
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = counts.trace() / max(counts.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.2%})")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

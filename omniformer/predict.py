"""omniformer-predict: top-k labels with probabilities for files, from a trained classifier.

omniformer-predict ckpt=outputs/.../checkpoints/best.ckpt inputs='[cat.png, dog.jpg]'
omniformer-predict ckpt=... inputs='[clip.wav]' top_k=3
omniformer-predict ckpt=... inputs='[...]' allow_targets='[my_plugin]'   # a plug-in modality's checkpoint

The classifier and its data module are rebuilt from the checkpoint's stored config, checked first
(:mod:`omniformer.trusted_config`): ``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from omniformer.checkpoint import datamodule_from_checkpoint, load_checkpoint, task_from_checkpoint
from omniformer.known_warnings import silence_known_warnings
from omniformer.trusted_config import parse_allow_targets


@torch.no_grad()
def predict(
    ckpt: str,
    inputs: list[str],
    top_k: int = 5,
    data_overrides: dict[str, Any] | None = None,
    allow_targets: str | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """For each input file: its ``top_k`` labels with probabilities, most likely first.

    ``allow_targets`` names plug-in packages whose classes the checkpoint's stored config may build.
    """
    if not inputs:
        raise ValueError("inputs is empty; give files, e.g. inputs='[a.png, b.png]'")
    allowed = parse_allow_targets(allow_targets)
    checkpoint = load_checkpoint(ckpt)
    task = task_from_checkpoint(checkpoint, allowed, source=ckpt)
    if not hasattr(task, "class_names") or not hasattr(task, "num_classes"):
        raise ValueError(f"{ckpt} was trained as {type(task).__name__}, not a classifier")
    datamodule = datamodule_from_checkpoint(checkpoint, data_overrides, allowed, source=ckpt)
    if not hasattr(datamodule, "load_inputs"):
        raise ValueError(f"{type(datamodule).__name__} cannot read input files for prediction")
    batch = datamodule.load_inputs([str(p) for p in inputs])
    batch = batch if isinstance(batch, (tuple, list)) else (batch,)
    probs = task(*batch).float().softmax(dim=-1)
    names = task.class_names or [str(i) for i in range(task.num_classes)]
    k = min(top_k, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    return [
        {"input": str(path), "top": [{"label": names[i], "prob": round(float(p), 6)} for p, i in zip(v, ix)]}
        for path, v, ix in zip(inputs, values.tolist(), indices.tolist())
    ]


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print one line per input: the top-k labels and probabilities."""
    silence_known_warnings()
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    for row in predict(cfg.ckpt, list(cfg.inputs), cfg.top_k, data, cfg.get("allow_targets")):
        ranked = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in row["top"])
        print(f"{row['input']}: {ranked}")


if __name__ == "__main__":
    main()

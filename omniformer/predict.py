"""omniformer-predict: top-k labels with probabilities for files, from a trained classifier.

omniformer-predict ckpt=outputs/.../checkpoints/best.ckpt inputs='[cat.png, dog.jpg]'
omniformer-predict ckpt=... inputs='[clip.wav]' top_k=3
omniformer-predict ckpt=models/digits inputs='[seven.png]'          # a model folder (omniformer-export)
omniformer-predict ckpt=... inputs='[...]' allow_targets='[my_plugin]'   # a plug-in modality's checkpoint

The classifier and its data module are rebuilt from the checkpoint's stored config, checked first
(:mod:`omniformer.trusted_config`): ``allow_targets`` names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from omniformer.api import load
from omniformer.known_warnings import silence_known_warnings


def predict(
    ckpt: str,
    inputs: list[str],
    top_k: int = 5,
    data_overrides: dict[str, Any] | None = None,
    allow_targets: str | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """For each input file: its ``top_k`` labels with probabilities, most likely first.

    ``ckpt`` is a checkpoint or a model folder (:func:`omniformer.load`); ``allow_targets`` names
    plug-in packages whose classes its stored config may build.
    """
    if not inputs:
        raise ValueError("inputs is empty; give files, e.g. inputs='[a.png, b.png]'")
    return load(ckpt, allow_targets=allow_targets).predict(inputs, top_k, data_overrides)


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

"""omniformer-eval: metrics of a trained checkpoint on its data's test (or validation) split.

    omniformer-eval ckpt=outputs/.../checkpoints/best.ckpt
    omniformer-eval ckpt=... split=val +data.root=/elsewhere     # override keys of the stored data config
    omniformer-eval ckpt=... allow_targets='[omniformer_video]'  # a checkpoint of a plug-in modality

Writes ``eval.json`` (metrics) and, for classifiers, ``confusion_matrix.png`` and a few example
figures into ``out_dir``. By default (:func:`default_out_dir`) that is the run's ``eval/`` folder when
the checkpoint sits in a run's ``checkpoints/`` folder (``<run>/checkpoints/best.ckpt`` →
``<run>/eval``), else ``eval/`` beside the checkpoint (``/tmp/x/model.ckpt`` → ``/tmp/x/eval``).

The task and data module are rebuilt from the config stored in the checkpoint, which anyone can edit:
only omniformer's own classes, a fixed list of torchvision transforms and the plug-in packages named
by ``allow_targets`` are built from it (:mod:`omniformer.trusted_config`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassConfusionMatrix

from omniformer.checkpoint import datamodule_from_checkpoint, load_checkpoint, task_from_checkpoint
from omniformer.files import write_json
from omniformer.known_warnings import known_warnings_silenced, silence_known_warnings
from omniformer.results import format_value, shown_metrics
from omniformer.tasks.classification import ClassificationTask
from omniformer.trusted_config import parse_allow_targets
from omniformer.user_errors import reported_briefly
from omniformer.viz import EXAMPLE_FIGURES
from omniformer.viz.confusion import save_confusion_matrix


def evaluate(
    ckpt: str,
    split: str = "test",
    data_overrides: dict[str, Any] | None = None,
    out_dir: str | None = None,
    figures: bool = True,
    accelerator: str = "auto",
    allow_targets: str | Sequence[str] | None = None,
) -> dict[str, float]:
    """Evaluate ``ckpt`` on ``split`` ("test" or "val"); return the metrics and write them to ``out_dir``.

    ``out_dir`` defaults to :func:`default_out_dir`. ``allow_targets`` names plug-in packages whose
    classes the checkpoint's stored config may build (:func:`~omniformer.trusted_config.parse_allow_targets`).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split={split!r}; choose 'test' or 'val'")
    allowed = parse_allow_targets(allow_targets)
    checkpoint = load_checkpoint(ckpt)
    task = task_from_checkpoint(checkpoint, allowed, source=ckpt)
    datamodule = datamodule_from_checkpoint(checkpoint, data_overrides, allowed, source=ckpt)
    out = Path(out_dir) if out_dir else default_out_dir(ckpt)
    has_test = type(datamodule).test_dataloader is not L.LightningDataModule.test_dataloader
    if split == "test" and not has_test:
        raise ValueError(f"{type(datamodule).__name__} has no test split; use split=val")
    with known_warnings_silenced():
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False)
        run = trainer.test if split == "test" else trainer.validate
        outputs = run(task, datamodule=datamodule, verbose=False)
    # One dict per data loader (a multi-task model's members), each repeating the metrics logged at the
    # end of the epoch: every metric once.
    metrics = {k: round(float(v), 6) for output in outputs for k, v in output.items()}
    if isinstance(task, ClassificationTask) and figures:
        loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
        _classifier_figures(task, loader, out, trainer.strategy.root_device)
    write_json(out / "eval.json", {"checkpoint": str(ckpt), "split": split, **metrics})
    return metrics


def default_out_dir(ckpt: str | Path) -> Path:
    """Where eval writes by default: ``<run>/eval`` for a checkpoint in a run's ``checkpoints/``
    folder, else ``eval/`` beside the checkpoint (never above the folder it was copied to)."""
    folder = Path(ckpt).expanduser().resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "eval"


@torch.no_grad()
def _classifier_figures(task: ClassificationTask, loader, out: Path, device: torch.device) -> None:
    """Confusion matrix over the whole split, and the modality's example figures for its first batch."""
    task = task.to(device).eval()
    confusion = MulticlassConfusionMatrix(task.num_classes).to(device)
    first = None
    for batch in loader:
        batch = [t.to(device) for t in batch]
        first = first or batch
        inputs, *lengths, labels = batch
        confusion.update(task(inputs, lengths[0] if lengths else None), labels)
    names = task.class_names or [str(i) for i in range(task.num_classes)]
    save_confusion_matrix(confusion.compute(), names, out / "confusion_matrix.png")
    target = EXAMPLE_FIGURES.get(task.modality)
    if target and first is not None:
        module, function = target.split(":")
        try:
            draw = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            return  # no figure function for this modality installed
        draw(task, first, names, out)


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Evaluate a checkpoint and print where the report went."""
    silence_known_warnings()
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    with reported_briefly():  # one sentence naming the file or key; HYDRA_FULL_ERROR=1 for the frames
        metrics = evaluate(
            cfg.ckpt, cfg.split, data, cfg.out_dir, cfg.figures, cfg.accelerator, cfg.get("allow_targets")
        )
    for key, value in shown_metrics(metrics).items():  # a multi-task model's summed loss once, by its name
        print(f"{key}: {format_value(key, value)}")


if __name__ == "__main__":
    main()

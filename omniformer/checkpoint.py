"""Reading omniformer checkpoints safely and rebuilding the trained task from them.

Every load for eval / generate / predict uses ``torch.load(weights_only=True)``: tensors and plain
containers only, so a checkpoint crafted to run code when unpickled is refused, never executed.
A checkpoint carries, beside Lightning's state, an ``omniformer`` section with the resolved config
and the data artifacts (e.g. the vocabulary) needed to use the model. That config is data anyone can
edit: the task and data module are rebuilt from it only after :mod:`omniformer.trusted_config` has
checked every ``_target_`` in it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from omniformer.checksums import CHECKSUM_KEY, verify_checksums
from omniformer.trusted_config import buildable_parts

FORMAT_VERSION = 1
SECTION = "omniformer"


def safe_torch_load(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for missing, unsafe or broken files.

    ``weights_only`` unpickles tensors and plain containers only: a file crafted to run code when
    unpickled (a ``__reduce__`` payload) is refused before anything in it executes. ``mmap`` maps
    the tensors instead of reading them (cheap when only the metadata is needed). The per-tensor
    checksums stored at save (:mod:`omniformer.checksums`) are verified: a file whose tensor bytes
    changed since raises :class:`~omniformer.checksums.CorruptCheckpointError` naming the tensor.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist{_why_no_best(path)}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        skip = (
            "Weights only load failed",
            "Check the documentation",
            "Please file",
            "WeightsUnpickler error",
        )
        details = [
            line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)
        ]
        reason = details[0] if details else type(err).__name__
        if "GLOBAL" in text or "Unsupported global" in text:
            why = (
                "it holds objects that need arbitrary code to unpickle, which a weights-only load never runs"
            )
        else:
            why = "it is corrupt, or holds pickled objects that a weights-only load never runs"
        raise ValueError(f"refusing to load {path}: {why} ({reason})") from None
    except Exception as err:
        if mmap and "mmap" in str(err):  # a legacy (non-zip) file cannot be mapped; read it instead
            return safe_torch_load(path, mmap=False)
        size = path.stat().st_size
        lines = str(err).strip().splitlines()
        raise ValueError(
            f"{path} is not a readable checkpoint ({size} bytes; truncated or corrupt?): "
            f"{lines[0] if lines else type(err).__name__}"
        ) from None
    verify_checksums(checkpoint, path)
    if isinstance(checkpoint, dict):
        checkpoint.pop(CHECKSUM_KEY, None)  # verified; the saver writes fresh ones
    return checkpoint


def _why_no_best(path: Path) -> str:
    """Why a run folder holds ``last.ckpt`` but no ``best.ckpt``, as the end of a sentence."""
    last = path.with_name("last.ckpt")
    if path.name != "best.ckpt" or not last.is_file():
        return ""
    return (
        ": best.ckpt is written after a validation, and this run never validated "
        f"(trainer.limit_val_batches=0?); use its last checkpoint, {last}"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; one clear error if it is missing, unsafe or foreign."""
    path = Path(path).expanduser()
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or SECTION not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not an omniformer checkpoint (it has no '{SECTION}' section); "
            "use a checkpoint written by omniformer-train"
        )
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved run config stored in a checkpoint."""
    return OmegaConf.create(checkpoint[SECTION]["config"])


def checkpoint_artifacts(checkpoint: dict[str, Any]) -> dict[str, str]:
    """Data artifacts (file name → text) stored in a checkpoint, e.g. ``vocab.json``."""
    return dict(checkpoint[SECTION].get("artifacts", {}))


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``torch.compile``'s ``_orig_mod.`` infixes so compiled and eager models share one format."""
    return {key.replace("_orig_mod.", ""): value for key, value in state.items()}


def task_from_checkpoint(
    checkpoint: dict[str, Any], allow_targets: Sequence[str] = (), source: str | Path | None = None
):
    """Rebuild the LightningModule a checkpoint was trained as and load its weights (eval mode).

    The stored ``task`` and ``data`` configs are checked first (:func:`~omniformer.trusted_config.
    buildable_parts`): only omniformer's own classes, a fixed list of torchvision transforms and the
    plug-in packages named in ``allow_targets`` are built. ``source`` (the file) names the checkpoint
    in errors.

    Raises:
        UntrustedConfigError: the stored config names anything else (each key and target named).
    """
    parts = buildable_parts(checkpoint_config(checkpoint), allow_targets, source=source)
    task = instantiate(parts["task"])
    task.load_state_dict(clean_state_dict(checkpoint["state_dict"]))
    return task.eval()


def datamodule_from_checkpoint(
    checkpoint: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    allow_targets: Sequence[str] = (),
    source: str | Path | None = None,
):
    """Rebuild the data module a checkpoint was trained on, with ``overrides`` (e.g. a new ``root``)
    merged into its config and the checkpoint's artifacts (vocabulary, class names) handed back.

    Checked like :func:`task_from_checkpoint` (the overrides included) before anything is built.
    """
    parts = buildable_parts(checkpoint_config(checkpoint), allow_targets, overrides, source)
    datamodule = instantiate(parts["data"])
    if hasattr(datamodule, "use_artifacts"):
        datamodule.use_artifacts(checkpoint_artifacts(checkpoint))
    return datamodule

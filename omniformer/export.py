"""omniformer-export: a trained model as a model folder, an ONNX graph or a torch.export program.

    omniformer-export ckpt=outputs/.../checkpoints/best.ckpt out=models/digits     # model folder
    omniformer-export ckpt=... out=models/digits.onnx format=onnx
    omniformer-export ckpt=... out=models/lm.pt2 format=torch_export
    omniformer-export ckpt=... out=models/digits overwrite=true inputs='[seven.png]'

A model folder (:mod:`omniformer.model_folder`) is written beside ``out`` first, loaded back the way
:func:`omniformer.load` loads it, and its logits compared with the checkpoint's own task on the same
batch (``inputs`` files, or a seeded batch of the model's input shape); only a folder that agrees to
:data:`TOLERANCE` is moved to ``out``. Graph formats are built by :mod:`omniformer.graph_export`,
which checks its own output. Needs ``pip install omniformer[export]``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from omniformer.api import folder_parts, load, load_folder
from omniformer.model_folder import (
    ModelFolderError,
    is_model_folder,
    load_tensors,
    safetensors_torch,
    write_model_folder,
)
from omniformer.model_spec import CLASSIFIER, PREFIX_LM, build_net
from omniformer.prefix_files import media_batch
from omniformer.prefix_inputs import media_prefix
from omniformer.prefix_sampling import prefix_logits
from omniformer.trusted_config import parse_allow_targets

FORMATS = ("folder", "onnx", "torch_export")
#: The largest absolute logit difference a written folder may show against the checkpoint.
TOLERANCE = 1e-5


class ExportCheckError(ValueError):
    """A written model whose outputs disagree with the checkpoint's."""


@dataclass
class Exported:
    """What :func:`export` wrote: the path, the largest output difference its check found, and what
    it was compared with (the checkpoint's task for a folder, eager PyTorch for a graph)."""

    path: Path
    max_abs_diff: float | None = None
    checked_against: str = ""


def export(
    ckpt: str | Path,
    out: str | Path,
    format: str = "folder",
    overwrite: bool = False,
    allow_targets: str | Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
) -> Exported:
    """Write the model in ``ckpt`` to ``out`` as ``format`` (see the module docstring).

    Raises:
        ValueError: an unknown format (listing the known ones), or ``out`` exists and ``overwrite``
            is false (naming it).
        ExportCheckError: the written folder's logits differ from the checkpoint's by more than
            :data:`TOLERANCE` (the folder is not kept).
        ImportError: the ``export`` extra is not installed.
    """
    if format not in FORMATS:
        raise ValueError(
            f"format={format!r} is not a known export format; choose one of {', '.join(FORMATS)}"
        )
    allowed = parse_allow_targets(allow_targets)
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    if format != "folder":
        from omniformer.graph_export import export_graph  # built separately; imports onnx / torch.export

        model = load(ckpt, allow_targets=allowed)
        _remove(out)
        report = export_graph(model, out, format, **graph_options(model))
        diffs = getattr(report, "max_abs_diff", None)
        worst = max(diffs.values()) if isinstance(diffs, dict) and diffs else diffs
        return Exported(out, worst if isinstance(worst, float) else None, "eager PyTorch")
    safetensors_torch()  # the one error naming the extra, before any work
    spec, tensors, artifacts = folder_parts(ckpt, allowed)
    net = load_tensors(build_net(spec["model"]), tensors, ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_model_folder(staging, spec, net, artifacts)
        diff = check_folder(ckpt, staging, allowed, inputs, name=out)
        _remove(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, diff, str(ckpt))


def graph_options(model) -> dict:
    """What a graph needs beyond the network: an image model's normalisation (``normalization.json``),
    so that the deployed graph takes ``[0, 1]`` pixels."""
    if "normalization.json" not in model.artifacts:
        return {}
    stats = json.loads(model.artifacts["normalization.json"])
    return {"pixel_mean": stats["mean"], "pixel_std": stats["std"]}


@torch.no_grad()
def check_folder(
    ckpt: str | Path,
    folder: Path,
    allow_targets: Sequence[str] = (),
    inputs: Sequence[str] | None = None,
    name: Path | None = None,
) -> float:
    """The largest absolute logit difference between the model loaded back from ``folder`` and the
    checkpoint's task on one batch; raises :class:`ExportCheckError` above :data:`TOLERANCE`."""
    from omniformer.checkpoint import load_checkpoint, task_from_checkpoint

    model = load_folder(folder, allow_targets)
    task = task_from_checkpoint(load_checkpoint(ckpt), allow_targets, source=ckpt)
    if inputs and model.kind == PREFIX_LM:
        batch = media_batch(model.read_media([str(p) for p in inputs]), model.media_reading)
    elif inputs:
        if model.kind != CLASSIFIER:
            raise ValueError("inputs= are files a classifier reads; a language model is checked on ids")
        batch = model.input_reader().load_inputs([str(p) for p in inputs])
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    else:
        batch = model.example_inputs()
    if model.kind == CLASSIFIER:
        expected = task(*batch)
    elif model.kind == PREFIX_LM:  # the logits of the first text id after the prefix
        expected = prefix_logits(task.net, media_prefix(task.net, model.modality, *batch), model.head)
    else:
        expected = task.net(model.modality, model.config["head"], batch[0], causal=True)
    diff = float((model.logits(*batch).float() - expected.float()).abs().max())
    if not diff <= TOLERANCE:
        raise ExportCheckError(
            f"refusing to write {name or folder}: loaded back, its logits differ from {ckpt}'s by "
            f"{diff:.3g} (max abs; tolerance {TOLERANCE:g}); nothing was written"
        )
    return diff


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite``; even then, only a file or a model folder."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise ValueError(f"out={out} exists; choose another path, or pass overwrite=true to replace it")
    if out.is_dir() and not out.is_symlink() and not is_model_folder(out):
        raise ModelFolderError(
            f"out={out} is a folder but not a model folder (no config.json or model.safetensors); "
            "overwrite=true replaces only a file or a model folder"
        )


def _remove(out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Export, then print what was written."""
    from omniformer.known_warnings import silence_known_warnings

    silence_known_warnings()
    inputs = [str(p) for p in cfg.get("inputs") or []]
    done = export(cfg.ckpt, cfg.out, cfg.format, bool(cfg.overwrite), cfg.get("allow_targets"), inputs)
    files = sorted(done.path.iterdir()) if done.path.is_dir() else [done.path]
    listing = ", ".join(f"{f.name} ({f.stat().st_size:,} bytes)" for f in files)
    print(f"wrote {done.path}: {listing}")
    if done.max_abs_diff is not None:
        print(f"checked against {done.checked_against}: max |output difference| {done.max_abs_diff:.3g}")


if __name__ == "__main__":
    main()

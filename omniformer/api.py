"""omniformer from Python: load a trained model, train one.

    import omniformer
    model = omniformer.load("models/digits")          # a model folder (omniformer-export) or a .ckpt
    model.predict(["seven.png"])                      # classifiers: top-k labels with probabilities
    omniformer.load("models/shakespeare").generate("ROMEO:", max_new_tokens=100)
    omniformer.load("models/transcribe").transcribe(["clip.wav"])   # prefix LMs: text of audio / images
    omniformer.load("models/read_digits").generate(image="digits.png", prompt="3 ")
    results, run_dir = omniformer.fit(overrides=["model=small", "trainer.max_steps=100"])

Loading a model folder reads only JSON and safetensors (never a pickle) and builds only what the
allow-list of :mod:`omniformer.trusted_config` permits; it imports neither Lightning nor the data
modules (reading a classifier's input files does, when ``predict`` is called).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from omniformer.inference import Model
from omniformer.model_folder import (
    ModelFolderError,
    load_tensors,
    read_artifacts,
    read_config,
    read_tensors,
)
from omniformer.model_spec import build_net, check_spec, spec_from_parts
from omniformer.trusted_config import parse_allow_targets

NET_PREFIX = "net."


def load(
    path: str | Path, device: str | torch.device = "cpu", allow_targets: str | Sequence[str] | None = None
) -> Model:
    """The trained model in ``path``: a model folder written by ``omniformer-export``, or (for
    convenience) an omniformer-train checkpoint (``.ckpt``).

    Args:
        path: the folder or checkpoint file.
        device: where to put the weights (``cpu``, ``cuda``, ``auto`` = CUDA when available).
        allow_targets: plug-in packages whose classes the stored config may build, e.g.
            ``["omniformer_video"]``; omniformer's own classes are always allowed.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ModelFolderError: an incomplete folder, another format, or tensors that disagree with the
            config (each naming the file or tensor).
        UntrustedConfigError: the stored config names a class outside the allow-list.
    """
    path = Path(path).expanduser()
    allowed = parse_allow_targets(allow_targets)
    if path.is_dir():
        model = load_folder(path, allowed)
    elif path.is_file():
        model = load_checkpoint_model(path, allowed)
    else:
        raise FileNotFoundError(f"model folder or checkpoint {path} does not exist")
    return model.to(pick_device(device))


def load_folder(folder: Path, allow_targets: Sequence[str] = ()) -> Model:
    """A :class:`Model` from a model folder (checked before anything is built)."""
    from omniformer.transfer import without_init_from

    config = read_config(folder)
    check_spec(config, allow_targets, folder / "config.json")
    tensors = read_tensors(folder, config)
    artifacts = read_artifacts(folder, config)
    net = build_net(without_init_from(config["model"]))
    load_tensors(net, tensors, folder / "model.safetensors")
    return Model(net, config, artifacts, folder, allow_targets)


def folder_parts(path: str | Path, allow_targets: Sequence[str] = ()) -> tuple[dict, dict, dict[str, str]]:
    """``(config.json body, net tensors, artifacts)`` of an omniformer-train checkpoint, its stored
    config checked as every checkpoint load checks it."""
    from omniformer.checkpoint import (
        checkpoint_artifacts,
        checkpoint_config,
        clean_state_dict,
        load_checkpoint,
    )
    from omniformer.trusted_config import buildable_parts

    checkpoint = load_checkpoint(path)
    parts = buildable_parts(checkpoint_config(checkpoint), allow_targets, source=path)
    spec = spec_from_parts(parts["task"], parts["data"], path)
    state = clean_state_dict(checkpoint["state_dict"])
    tensors = {k[len(NET_PREFIX) :]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    if not tensors:
        raise ModelFolderError(f"{path} holds no '{NET_PREFIX}*' tensors (the task's network)")
    return spec, tensors, checkpoint_artifacts(checkpoint)


def load_checkpoint_model(path: Path, allow_targets: Sequence[str] = ()) -> Model:
    """A :class:`Model` from an omniformer-train checkpoint (weights-only load, config checked)."""
    spec, tensors, artifacts = folder_parts(path, allow_targets)
    net = build_net(spec["model"])
    load_tensors(net, tensors, path)
    return Model(net, spec, artifacts, path, allow_targets)


def pick_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; any other value is used as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    config_name: str = "train", overrides: Sequence[str] | None = None, run_dir: str | Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Train as ``omniformer-train <overrides>`` would; return the results and the run folder.

    Args:
        config_name: the config in ``omniformer/conf`` to compose (``train``).
        overrides: command-line style overrides, e.g. ``["task=image_classification", "data=mnist"]``.
        run_dir: the run folder (default: ``outputs/<date>/<time>`` as on the command line).

    The config schemas are registered and composed for you; the run is the command's own
    (:func:`omniformer.train.run`), so checkpoints, ``results.json`` and the vocabulary land in
    ``run_dir`` as they would from the command line. A ``run_dir`` that already holds a run is
    refused (:class:`~omniformer.run_folders.RunFolderUsed`) unless the overrides continue it
    (``ckpt_path=last``).
    """
    from omniformer.train import compose_run, train

    cfg, folder = compose_run(list(overrides or []), run_dir, config_name)
    return train(cfg, folder), folder

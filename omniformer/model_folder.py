"""Model folders: a trained network as plain tensors and JSON, loadable without pickle or Lightning.

The layout follows Hugging Face's (``huggingface_hub.PyTorchModelHubMixin``), and everything works
offline::

    models/digits/
      config.json          # format + version, the model config (tokenizers, backbone, heads) and
                           # what inference needs (kind, classes, input reading, context length)
      model.safetensors    # the OmniModel's state dict: tensors and a JSON header, never code
      classes.json ...     # the artifacts the checkpoint carried (vocab.json, normalization.json...)
      tokenizer.json       # BPE models: the same vocabulary in Hugging Face ``tokenizers``' own format

safetensors refuses tensors that share memory, so a tied weight (an LM head tied to its token
embedding) is stored once and its other names are listed under ``tied_weights`` in config.json; the
network re-ties them when it is built. What config.json may *build* is checked by
:mod:`omniformer.model_spec`; this module only reads and writes the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omniformer.files import atomic_write_text, file_mode

FORMAT = "omniformer-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HF_TOKENIZER_FILE = "tokenizer.json"  # written for other tools; omniformer reads vocab.json
EXTRA = "pip install omniformer[export]"


class ModelFolderError(ValueError):
    """A model folder that is incomplete, of another format, or whose tensors disagree with its config."""


def safetensors_torch():
    """``safetensors.torch``, or an ImportError naming the extra that installs it."""
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(
            f"model folders are stored with safetensors, which is not installed; run: {EXTRA}"
        ) from None
    return safetensors.torch


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a model folder's ``config.json`` or ``model.safetensors``."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / WEIGHTS_FILE).is_file())


def shared_names(net: nn.Module) -> dict[str, str]:
    """``alias → stored name`` for state-dict entries that share memory with an earlier entry."""
    first: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    aliases = {}
    for name, tensor in net.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
    return aliases


def write_model_folder(
    out: str | Path, config: Mapping[str, Any], net: nn.Module, artifacts: Mapping[str, str]
) -> Path:
    """Write ``net``'s weights, ``config`` (plus format, version, ``tied_weights`` and the artifact
    names) and the ``artifacts`` (file name → text) into the folder ``out``; return it."""
    st = safetensors_torch()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tied = shared_names(net)
    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in net.state_dict().items()
        if name not in tied
    }
    for name in artifacts:
        _check_artifact_name(name, out)
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **{k: v for k, v in config.items() if k not in ("format", "format_version")},
        "tied_weights": tied,
        "artifacts": sorted(artifacts),
    }
    st.save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / WEIGHTS_FILE).chmod(file_mode())  # as every file omniformer writes (safetensors' own is 0600)
    out.chmod(file_mode() | ((file_mode() & 0o444) >> 2))  # a folder readable where its files are
    for name, text in artifacts.items():
        atomic_write_text(out / name, text)
    hf_tokenizer = hf_tokenizer_json(artifacts.get("vocab.json"))
    if hf_tokenizer is not None:
        atomic_write_text(out / HF_TOKENIZER_FILE, hf_tokenizer)
    atomic_write_text(out / CONFIG_FILE, json.dumps(body, indent=2) + "\n")
    return out


def hf_tokenizer_json(vocab_json: str | None) -> str | None:
    """The Hugging Face ``tokenizers`` JSON inside a BPE vocabulary's ``vocab.json`` (what
    ``tokenizers.Tokenizer.from_file`` reads), or ``None`` for a char vocabulary or none at all."""
    if vocab_json is None:
        return None
    data = json.loads(vocab_json)
    if isinstance(data, dict) and data.get("omniformer_vocab") == "bpe":
        return data["tokenizer"]
    return None


def read_config(folder: str | Path) -> dict[str, Any]:
    """A model folder's ``config.json``, checked to be this format and a version this code reads.

    Raises:
        ModelFolderError: the folder, ``config.json`` or ``model.safetensors`` is missing, the JSON
            is broken, or it is another format or a newer version.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelFolderError(
                f"{folder} is not a complete model folder: it has no {name} (omniformer-export writes one)"
            )
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{folder / CONFIG_FILE} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{folder / CONFIG_FILE} holds a {type(config).__name__}, not a JSON object")
    kind, version = config.get("format"), config.get("format_version")
    if kind != FORMAT or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFolderError(
            f"{folder / CONFIG_FILE} is format {kind!r} version {version!r}; this omniformer reads "
            f"{FORMAT!r} versions 1 to {FORMAT_VERSION}"
        )
    return config


def read_tensors(folder: str | Path, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, each tied alias of ``config`` restored under its name."""
    st = safetensors_torch()
    path = Path(folder).expanduser() / WEIGHTS_FILE
    try:
        tensors = st.load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for a broken header or size
        raise ModelFolderError(
            f"{path} is not a readable safetensors file ({path.stat().st_size} bytes): {err}"
        ) from None
    tied = config.get("tied_weights") or {}
    if not isinstance(tied, dict):
        raise ModelFolderError(f"{Path(folder) / CONFIG_FILE}: tied_weights must map names to names")
    for alias, stored in tied.items():
        if stored not in tensors:
            raise ModelFolderError(
                f"{Path(folder) / CONFIG_FILE}: tied weight {alias} names {stored}, which {path} "
                "does not hold"
            )
        tensors[alias] = tensors[stored]
    return tensors


def read_artifacts(folder: str | Path, config: Mapping[str, Any]) -> dict[str, str]:
    """The artifact files ``config`` lists (file name → text), read from ``folder``."""
    folder = Path(folder).expanduser()
    names = config.get("artifacts") or []
    artifacts = {}
    for name in names:
        _check_artifact_name(name, folder)
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"{folder / CONFIG_FILE} lists the artifact {name}, but {path} is missing")
        artifacts[name] = path.read_text(encoding="utf-8")
    return artifacts


def load_tensors(net: nn.Module, tensors: Mapping[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Copy ``tensors`` into ``net`` after checking that names and shapes agree exactly.

    Raises:
        ModelFolderError: a tensor the config's model has is missing, one it does not have is
            present, or a shape differs (naming the tensor and both shapes).
    """
    expected = net.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing:
        raise ModelFolderError(
            f"{source}: the weights lack tensors the configured model has: {', '.join(missing[:6])}"
            + (f" (and {len(missing) - 6} more)" if len(missing) > 6 else "")
        )
    if extra:
        raise ModelFolderError(
            f"{source}: the weights hold tensors the configured model does not have: {', '.join(extra[:6])}"
            + (f" (and {len(extra) - 6} more)" if len(extra) > 6 else "")
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelFolderError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)} in the weights but "
                f"{tuple(expected[name].shape)} in the model its config describes"
            )
    net.load_state_dict(dict(tensors), strict=True)
    return net


def _check_artifact_name(name: Any, folder: Path) -> None:
    """An artifact is a plain file name inside the folder, never a path out of it."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelFolderError(f"{folder}: artifact name {name!r} is not a plain file name")
    if name in (CONFIG_FILE, WEIGHTS_FILE):
        raise ModelFolderError(f"{folder}: an artifact may not be named {name}")

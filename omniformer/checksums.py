"""Per-tensor checksums, so a checkpoint whose bytes changed after it was written is named, not used.

``torch.load`` verifies neither the zip records' CRCs nor anything else about tensor bytes: a bit
flipped on disk, in a copy or in transit loads as a slightly different weight and trains or
predicts on silently. Every checkpoint omniformer writes therefore carries a CRC-32 of each tensor's
bytes, keyed by where the tensor sits in the checkpoint (``state_dict.backbone.norm.weight``,
``optimizer_states.0.state.3.exp_avg``), and every load recomputes them. CRC-32 (the checksum zip
itself uses) detects every burst error up to 32 bits, so any flipped bit, and costs about one memory
pass over the tensors: a few milliseconds for the small models, next to the write itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

#: Top-level checkpoint key holding ``{"algorithm": "crc32", "tensors": {location: checksum}}``.
CHECKSUM_KEY = "omniformer_checksums"
ALGORITHM = "crc32"


class CorruptCheckpointError(ValueError):
    """A tensor's bytes differ from the checksum stored when the checkpoint was written."""


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, with its dotted location."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if key != CHECKSUM_KEY:
                yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{index}" if prefix else str(index))


def tensor_checksum(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes in row-major order (its dtype's layout), on the CPU."""
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    data = data.contiguous().reshape(-1)
    if data.numel() == 0:
        return 0
    return zlib.crc32(data.view(torch.uint8).numpy())


def tensor_checksums(checkpoint: Mapping[str, Any]) -> dict[str, int]:
    """``location → CRC-32`` for every tensor in ``checkpoint``."""
    return {location: tensor_checksum(tensor) for location, tensor in _tensors(checkpoint)}


def with_checksums(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``checkpoint`` with the checksums of its tensors under :data:`CHECKSUM_KEY`."""
    return {
        **checkpoint,
        CHECKSUM_KEY: {"algorithm": ALGORITHM, "tensors": tensor_checksums(checkpoint)},
    }


def verify_checksums(checkpoint: Any, path: str | Path) -> None:
    """Recompute the checksums of ``checkpoint`` (loaded from ``path``) and raise
    :class:`CorruptCheckpointError` naming the file and the first tensor that differs, or that is
    missing or added. A checkpoint written without checksums (older versions) passes unchecked."""
    if not isinstance(checkpoint, Mapping) or CHECKSUM_KEY not in checkpoint:
        return
    stored = checkpoint[CHECKSUM_KEY]
    if not isinstance(stored, Mapping) or stored.get("algorithm") != ALGORITHM:
        raise CorruptCheckpointError(
            f"{path}: its '{CHECKSUM_KEY}' record is damaged or of an unknown kind "
            f"({type(stored).__name__}); the file cannot be trusted"
        )
    expected = stored.get("tensors") or {}
    seen = set()
    for location, tensor in _tensors(checkpoint):
        seen.add(location)
        if location not in expected:
            raise CorruptCheckpointError(
                f"{path}: tensor {location} has no stored checksum (it was added or renamed after the "
                "file was written); the file cannot be trusted"
            )
        if tensor_checksum(tensor) != expected[location]:
            raise CorruptCheckpointError(
                f"{path}: tensor {location} {tuple(tensor.shape)} does not match the checksum stored when "
                "the file was written (a flipped bit or a partial overwrite on disk or in a copy); the file "
                "cannot be trusted: use another checkpoint or copy it again"
            )
    missing = sorted(set(expected) - seen)
    if missing:
        raise CorruptCheckpointError(
            f"{path}: tensor {missing[0]} (and {len(missing) - 1} more) is missing though the file was "
            "written with it; the file cannot be trusted"
        )

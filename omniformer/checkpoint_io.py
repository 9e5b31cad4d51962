"""Writing checkpoints so that a crash never leaves a broken one, and deciding when to write them.

:class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` plugin every ``omniformer-train`` run
uses. It serialises a checkpoint into a temporary file *beside* the target, flushes it to disk
(``fsync``), and renames it over the target (``os.replace``, atomic on POSIX and Windows), then
syncs the folder. A process killed at any moment — even by SIGKILL in the middle of writing —
leaves either the previous complete file or the new complete file, never a truncated one; at
worst a stray ``.last.ckpt.*.tmp`` remains, which the next save of that file removes. Every saved
checkpoint carries a CRC-32 per tensor (:mod:`omniformer.checksums`), which every load verifies.

Lightning 2.6's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file
lives in the system temp folder; when that folder is on another filesystem than the run (the usual
case on clusters: local ``/tmp``, shared scratch), the final move is a copy into the target path,
which a kill can interrupt half-way, and nothing is fsynced.

Loading goes through :func:`omniformer.checkpoint.safe_torch_load` (``weights_only=True``), so
resuming (``ckpt_path=last``) refuses a file that would need arbitrary code to unpickle and names a
truncated or corrupt file instead of failing deep inside ``torch.load``.

When to write them is :class:`omniformer.run_checkpoint.RunCheckpoint`'s job.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

from omniformer.checkpoint import clean_state_dict, safe_torch_load
from omniformer.checksums import CHECKSUM_KEY, verify_checksums, with_checksums
from omniformer.files import atomic_torch_save

log = logging.getLogger("omniformer")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with crash-safe saves and weights-only loads (see the module docstring).

    Remote paths (``s3://``...) are written through Lightning's fsspec transaction and read with
    Lightning's loader, also weights-only.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        checkpoint = with_checksums(checkpoint)  # verified by every load (omniformer.checksums)
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """Always weights-only: resuming never unpickles code, whatever the caller asks for. State-dict
        keys lose ``torch.compile``'s ``_orig_mod.`` infixes (a checkpoint written around a compile
        wrapper resumes into the eager or the in-place compiled model)."""
        if not _is_local_file_protocol(path):
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
            verify_checksums(checkpoint, path)
            checkpoint.pop(CHECKSUM_KEY, None)
        else:
            checkpoint = safe_torch_load(path)
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
            checkpoint["state_dict"] = clean_state_dict(checkpoint["state_dict"])
        return checkpoint


def __getattr__(name: str) -> Any:
    # Older configs name omniformer.checkpoint_io.RunCheckpoint: it moved to omniformer.run_checkpoint.
    if name == "RunCheckpoint":
        from omniformer.run_checkpoint import RunCheckpoint

        return RunCheckpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Video clips as the prefix of a prefix LM (clip in, text out): a reader of ``.npy`` clip files for
omniformer's paired data module, and a tiny generated demo set to try it on.

:class:`ClipReader` is the plug-in side of ``data=paired``: the manifest's media column is ``video``
(``{"video": "clips/3.npy", "text": "right"}``), each file a ``T×H×W`` (grey) or ``T×C×H×W`` array,
``uint8`` (scaled to [0, 1]) or float. Clips of one batch share ``C×H×W``; shorter clips are
zero-padded in time (to a multiple of the tubelet's frames) and :class:`TubeletTokenizer` masks the
tubelets past each clip's real frames.

:func:`write_moving_squares` writes such a folder: a bright square moving across a dark frame, the
text the way it moves (``up``, ``down``, ``left``, ``right``)::

    PYTHONPATH=examples/video python -m omniformer_video.clips squares/ --count 200
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omniformer.data.media_readers import MediaReader

DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


class ClipReader(MediaReader):
    """Reads ``.npy`` clips as ``T×C×H×W`` floats and pads a batch of them in time.

    Args:
        channels: channels per frame (1 grey, 3 RGB); ``T×H×W`` files are grey.
        frame_multiple: pad a batch's frames to a multiple of this (the tubelet's frames).
    """

    modality = "video"

    def __init__(self, channels: int = 1, frame_multiple: int = 2) -> None:
        if channels < 1 or frame_multiple < 1:
            raise ValueError(f"channels={channels}, frame_multiple={frame_multiple}: both must be >= 1")
        self.channels, self.frame_multiple = channels, frame_multiple

    def padded_frames(self, frames: int) -> int:
        """``frames`` rounded up to a multiple of ``frame_multiple`` (what a batch is padded to)."""
        return -(-frames // self.frame_multiple) * self.frame_multiple

    def read(self, path: Path) -> Tensor:
        clip = np.load(path, allow_pickle=False)
        if clip.ndim == 3:
            clip = clip[:, None]
        if clip.ndim != 4 or clip.shape[1] != self.channels or clip.shape[0] < 1:
            raise ValueError(
                f"a clip must be a T×H×W or T×{self.channels}×H×W array (channels={self.channels}), "
                f"got shape {clip.shape}"
            )
        scale = 255.0 if clip.dtype == np.uint8 else 1.0
        return torch.from_numpy(clip.astype(np.float32) / scale)

    def pad(self, media: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        shapes = {tuple(clip.shape[1:]) for clip in media}
        if len(shapes) != 1:
            raise ValueError(f"clips of one batch must share C×H×W, got {sorted(shapes)}")
        lengths = torch.tensor([clip.shape[0] for clip in media], dtype=torch.long)
        frames = self.padded_frames(int(lengths.max()))
        out = torch.zeros(len(media), frames, *shapes.pop())
        for row, clip in enumerate(media):
            out[row, : clip.shape[0]] = clip
        return out, lengths

    def spec(self, example: Tensor) -> dict[str, Any]:
        frames = self.padded_frames(example.shape[0])
        return {
            "in_channels": self.channels,
            "frames": frames,
            "image_size": [int(example.shape[-2]), int(example.shape[-1])],
        }


def moving_square(direction: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``frames×size×size`` ``uint8`` clip: a 4-pixel square stepping 2 pixels per frame."""
    dr, dc = DIRECTIONS[direction]
    side, step = 4, 2
    travel = step * (frames - 1)
    lo = [travel if d < 0 else 0 for d in (dr, dc)]
    hi = [size - side - (travel if d > 0 else 0) for d in (dr, dc)]
    if min(h - lo_ for h, lo_ in zip(hi, lo)) < 0:
        raise ValueError(f"a {size}-pixel frame is too small for {frames} frames of motion")
    r, c = (int(rng.integers(a, b + 1)) for a, b in zip(lo, hi))
    clip = np.zeros((frames, size, size), dtype=np.uint8)
    for t in range(frames):
        rr, cc = r + dr * step * t, c + dc * step * t
        clip[t, rr : rr + side, cc : cc + side] = 255
    return clip


def write_moving_squares(
    folder: str | Path, count: int = 200, frames: Sequence[int] = (6, 8), size: int = 32, seed: int = 0
) -> Path:
    """Write ``count`` clips (``clips/<i>.npy``, each of one of ``frames`` lengths) and the manifest
    ``clips.jsonl`` of their directions into ``folder``; return the manifest's path."""
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        direction = list(DIRECTIONS)[i % len(DIRECTIONS)]
        clip = moving_square(direction, int(frames[int(rng.integers(len(frames)))]), size, rng)
        np.save(folder / "clips" / f"{i}.npy", clip)
        rows.append(json.dumps({"video": f"clips/{i}.npy", "text": direction}) + "\n")
    manifest = folder / "clips.jsonl"
    manifest.write_text("".join(rows))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny moving-squares clip set and its manifest.")
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_moving_squares(args.folder, args.count, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()

"""A video modality plugged into omniformer from outside the package.

Two classes and two YAML files, nothing inside ``omniformer/``: :class:`TubeletTokenizer` turns clips
into tokens for the shared backbone, :class:`MovingMNISTDataModule` makes Moving-MNIST-style clips from
real MNIST digits. ``conf/`` wires them in through Hydra ``_target_`` s; run from the repository root::

    PYTHONPATH=examples/video omniformer-train hydra.searchpath='[file://examples/video/conf]' \\
        task=video_classification data.root=../shared/data

The same tokenizer is also the prefix of a prefix LM (clip in, text out): :class:`ClipReader` reads
``.npy`` clips for omniformer's paired data module (``data=video_pairs``, ``prefix=video``), and
:func:`write_moving_squares` writes a tiny demo set.
"""

from omniformer_video.clips import ClipReader, write_moving_squares
from omniformer_video.data import MovingDigits, MovingMNISTDataModule, trajectory
from omniformer_video.tokenizer import TubeletTokenizer, sincos_1d, sincos_3d

__all__ = [
    "ClipReader",
    "MovingDigits",
    "MovingMNISTDataModule",
    "TubeletTokenizer",
    "sincos_1d",
    "sincos_3d",
    "trajectory",
    "write_moving_squares",
]

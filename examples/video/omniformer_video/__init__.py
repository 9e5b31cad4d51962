"""A video modality plugged into omniformer from outside the package.

Two classes and two YAML files, nothing inside ``omniformer/``: :class:`TubeletTokenizer` turns clips
into tokens for the shared backbone, :class:`MovingMNISTDataModule` makes Moving-MNIST-style clips from
real MNIST digits. ``conf/`` wires them in through Hydra ``_target_`` s; run from the repository root::

    PYTHONPATH=examples/video omniformer-train hydra.searchpath='[file://examples/video/conf]' \\
        task=video_classification data.root=../shared/data
"""

from omniformer_video.data import MovingDigits, MovingMNISTDataModule, trajectory
from omniformer_video.tokenizer import TubeletTokenizer, sincos_1d, sincos_3d

__all__ = [
    "MovingDigits",
    "MovingMNISTDataModule",
    "TubeletTokenizer",
    "sincos_1d",
    "sincos_3d",
    "trajectory",
]

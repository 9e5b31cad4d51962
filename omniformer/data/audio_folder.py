"""Your own clips, one sub-folder per class, split by folders or held out per class."""

from __future__ import annotations

from pathlib import Path

from omniformer.data.audio import AudioClassificationDataModule
from omniformer.data.audio_files import SUPPORTED_SUFFIXES, UNSUPPORTED_AUDIO
from omniformer.data.locations import missing_hint
from omniformer.data.splits import hold_out, split_folders


class AudioFolderDataModule(AudioClassificationDataModule):
    """Any folder with one sub-folder per class of ``.wav`` / ``.flac`` / ``.ogg`` clips.

    Layouts, as for image folders: ``root/<class>/<clip>``, or ``root/train/<class>/...`` with
    optional ``root/val/`` and ``root/test/`` beside it, so that whole speakers or recording sessions
    can be kept out of training. A split without its own folder is held out of the training clips:
    a deterministic stratified split (per class, seeded by ``seed`` and the class name) takes
    ``val_fraction`` and ``test_fraction`` of each class's clips, each split listed in file order as
    split folders would list it (so both layouts of the same files train alike). A ``val/`` or
    ``test/`` folder may hold a subset of the training classes. Hidden files and non-audio files are
    skipped; audio in a format soundfile cannot read (mp3, m4a, ...) raises, naming the file, and so
    does a layout that mixes the two (a class folder literally named ``train``, ``val`` or ``test``).

    Args:
        root: the folder of class sub-folders (or of ``train/``, ``val/``, ``test/``).
        val_fraction: share of each class held out for validation when there is no ``val/`` folder.
        test_fraction: share of each class held out for testing when there is no ``test/`` folder.
        **kwargs: see :class:`AudioClassificationDataModule`.
    """

    def __init__(self, root: str, val_fraction: float = 0.1, test_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(root, **kwargs)
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each lie in "
                "(0, 1) and sum to less than 1"
            )
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def find_splits(self) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
        if self.root is None or not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root: audio folder {self.root} does not exist; {missing_hint(Path(self.root))}"
            )
        folders = split_folders(self.root, "clip") or {}
        train_root = folders.get("train", self.root)
        class_dirs = _class_dirs(train_root)
        classes = [folder.name for folder in class_dirs]
        held = {"val": self.val_fraction, "test": self.test_fraction}
        held = {split: fraction for split, fraction in held.items() if split not in folders}
        splits: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
        for folder in class_dirs:
            parts = hold_out(_clips(folder), folder.name, self.seed, held, f"class folder {folder}")
            for split, files in parts.items():
                # In file order, as a split folder lists them: the same files train in the same order
                # (and so give the same run) whether the split is held out or laid out in folders.
                splits[split] += [(path, folder.name) for path in sorted(files)]
        for split in ("val", "test"):
            for folder in _class_dirs(folders[split]) if split in folders else []:
                if folder.name not in classes:
                    raise ValueError(
                        f"{folder} is a class the training folder {train_root} does not have "
                        f"(training classes: {classes})"
                    )
                splits[split] += [(path, folder.name) for path in _clips(folder)]
        return classes, splits


def _class_dirs(root: Path) -> list[Path]:
    """The class sub-folders of ``root`` (hidden ones skipped), sorted; an error if there are none."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"data.root: {root} has no class sub-folders (one per class)")
    return class_dirs


def _clips(folder: Path) -> list[Path]:
    """The audio files under a class folder, sorted; hidden and non-audio files skipped.

    Raises:
        ValueError: a file in a format soundfile cannot read.
        FileNotFoundError: the folder holds no audio.
    """
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        suffix = path.suffix.lower()
        if suffix in UNSUPPORTED_AUDIO:
            raise ValueError(
                f"{path}: unsupported audio format {suffix!r}; supported: "
                f"{', '.join(SUPPORTED_SUFFIXES)} (convert it, e.g. with ffmpeg)"
            )
        if suffix in SUPPORTED_SUFFIXES:
            files.append(path)
    if not files:
        raise FileNotFoundError(f"class folder {folder} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
    return files

"""Train / validation / test splits: seeded hold-outs, stratified splits, split folders, which splits exist.

Every split is a pure function of its inputs and a seed given in the config (``data.split_seed`` or
``data.seed``), so a dataset splits the same way in every run and on every machine.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch

#: Folder names that mark the split layout ``root/train/<class>/...`` of a class-folder dataset.
SPLIT_FOLDERS = ("train", "val", "test")
T = TypeVar("T")


def has_split(datamodule: L.LightningDataModule, split: str) -> bool:
    """Whether ``datamodule`` serves ``split`` (``train``, ``val``, ``test`` or ``predict``): its class
    overrides ``LightningDataModule``'s ``<split>_dataloader`` (a language model has no test split)."""
    method = getattr(type(datamodule), f"{split}_dataloader", None)
    return method is not None and method is not getattr(L.LightningDataModule, f"{split}_dataloader")


def split_indices(n: int, val_size: float | int, seed: int, key: str = "data.val_size") -> tuple[list, list]:
    """Deterministic ``(kept, held_out)`` index lists; ``val_size`` is a count or a fraction of ``n``."""
    if isinstance(val_size, float) and 0 < val_size < 1:
        count = max(1, round(n * val_size))
    elif float(val_size).is_integer() and val_size >= 0:
        count = int(val_size)
    else:
        raise ValueError(f"{key}={val_size} must be a count or a fraction between 0 and 1")
    if count >= n:
        raise ValueError(f"{key}={val_size} holds out {count} of {n} training images; leave some to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[count:]), sorted(order[:count])


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic ``(train, val, test)`` index lists, each class split in the same proportions.

    One generator seeded by ``seed`` shuffles the classes' members in label order; each class gives
    ``round(n · fraction)`` members to validation and to testing.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        n_val, n_test = round(len(members) * val_fraction), round(len(members) * test_fraction)
        if len(members) - n_val - n_test < 1:
            raise ValueError(
                f"class {label} has {len(members)} document(s): too few for data.val_fraction={val_fraction} "
                f"and data.test_fraction={test_fraction}"
            )
        val += members[:n_val]
        test += members[n_val : n_val + n_test]
        train += members[n_val + n_test :]
    return sorted(train), sorted(val), sorted(test)


def hold_out(
    items: list[T], name: str, seed: int, fractions: dict[str, float], where: str
) -> dict[str, list[T]]:
    """Split one class's ``items`` (in a fixed order) into ``train`` and the held-out ``fractions``.

    Each held-out split takes ``max(1, round(n · fraction))`` items, in the order of ``fractions``,
    after a shuffle seeded by ``seed`` and the class ``name`` alone (so adding a class does not move
    another's split). With no ``fractions`` every item trains.

    Raises:
        ValueError: no item would be left to train on (naming ``where``, the class's folder).
    """
    counts = {split: max(1, round(len(items) * fraction)) for split, fraction in fractions.items()}
    if len(items) - sum(counts.values()) < 1:
        raise ValueError(
            f"{where} has {len(items)} item(s): too few for a train split and {' and '.join(counts)} "
            "held out of it"
        )
    order = list(items)
    if counts:
        random.Random(f"{seed}/{name}").shuffle(order)
    splits, start = {}, 0
    for split, count in counts.items():
        splits[split], start = order[start : start + count], start + count
    splits["train"] = order[start:]
    return splits


def split_folders(root: Path, example: str, key: str = "data.root") -> dict[str, Path] | None:
    """The split folders of a class-folder dataset, or ``None`` for the flat layout ``root/<class>/...``.

    The split layout is ``root/train/<class>/...`` with optional ``root/val/`` and ``root/test/``
    beside it; the result maps each split present to its folder. ``example`` names an item in the
    message (``image``, ``clip``), ``key`` the setting that names ``root``. The audio, image and
    text-classification folders all read their layout here.

    Raises:
        ValueError: the two layouts are mixed: ``val/`` or ``test/`` without ``train/`` (or a class
            literally named so), split folders beside class folders, or a split folder that holds
            files but no class folders (a class literally named ``train``, ``val`` or ``test``).
    """
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    present = [name for name in SPLIT_FOLDERS if name in folders]
    if not present:
        return None
    classes = [name for name in folders if name not in SPLIT_FOLDERS]
    layout = (
        f"lay the data out as <{key}>/train/<class>/<{example}> (with optional val/ and test/ beside "
        f"train/), or as <{key}>/<class>/<{example}> with no class folder named train, val or test"
    )
    if "train" not in present:
        raise ValueError(f"{root} has a {present[0]!r} folder but no 'train' folder: {layout}")
    if classes:
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise ValueError(
            f"{root} has split folders ({', '.join(present)}) beside other folders ({shown}): {layout}"
        )
    for name in present:
        inside = [e for e in os.scandir(root / name) if not e.name.startswith(".")]
        if inside and not any(e.is_dir() for e in inside):
            raise ValueError(
                f"{root / name} holds files but no class folders, as if {name!r} were a class: {layout}"
            )
    return {name: root / name for name in present}

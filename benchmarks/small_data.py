"""Small data: omniformer's defaults on a folder of ~1,500 images and one of ~300 clips, against a baseline.

    python -m benchmarks.small_data                         # both folders (about 15 minutes on 2 cores)
    python -m benchmarks.small_data --only image --images 500
    python -m benchmarks.small_data --out /tmp/small --work /tmp/small/work

What a user with a small folder types is what runs: the folders are exported from real data in
``../shared/data`` (MNIST test digits as PNGs, Free Spoken Digit Dataset clips as WAVs, a seeded
choice of the same number per class), then ``omniformer-train task=<kind>_classification
data=<kind>_folder data.root=<folder>`` trains on each with every other setting at its default
(a subprocess, ``OMP_NUM_THREADS=1``), and the test accuracy is read from the run's ``results.json``.

The baseline is multinomial logistic regression (full-batch L-BFGS in torch, L2 chosen on the
validation split from a small grid) on raw pixels for images and on per-clip MFCC means for audio.
It is fitted on exactly the files the run trained, validated and tested on: the split is read back
from the data module that the run's own saved config builds, never recomputed here.

The same files are then written to a ``train/ val/ test/`` layout and trained on again; the table
says whether that run's test accuracy equals the fraction-split run's. Writes ``small_data.json``
and ``small_data.md`` to ``--out`` (default ``benchmarks/results/``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from benchmarks.machine import machine_info
from omniformer.files import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OMNIFORMER_SHARED_DATA", REPO.parent / "shared" / "data"))
SPLITS = ("train", "val", "test")
#: L2 strengths the baseline chooses from on the validation split (``l2/2 · ||W||²`` on the mean loss).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
#: What a user types for each kind of folder (README, "Images" and "Audio").
COMMANDS = {
    "image": ["task=image_classification", "data=image_folder"],
    "audio": ["task=audio_classification", "data=audio_folder"],
}


# ------------------------------------------------------------------------------------------- export
def per_class_choice(labels: Sequence[int], per_class: int, seed: int) -> list[int]:
    """Indices of ``per_class`` items of every label, a seeded choice, sorted."""
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        if len(members) < per_class:
            raise ValueError(f"label {label} has {len(members)} items, fewer than {per_class}")
        chosen += rng.sample(members, per_class)
    return sorted(chosen)


def export_images(out: Path, count: int, seed: int = 0, data: Path = SHARED_DATA) -> Path:
    """Write ``count`` MNIST test digits (``count / 10`` per class) as ``out/<digit>/<index>.png``.

    The test images are MNIST's original files (the shared train images were rebuilt from a
    tone-mapped export). Returns ``out``.
    """
    from torchvision.datasets import MNIST

    mnist = MNIST(root=str(data), train=False, download=False)
    labels = mnist.targets.tolist()
    for index in per_class_choice(labels, count // 10, seed):
        folder = out / str(labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.data[index].numpy(), mode="L").save(folder / f"mnist_test_{index:05d}.png")
    return out


def export_audio(out: Path, count: int, seed: int = 0, data: Path = SHARED_DATA) -> Path:
    """Write ``count`` FSDD recordings (``count / 10`` per digit, any speaker) as ``out/<digit>/<name>.wav``.

    Each clip is read and written with ``soundfile`` (16-bit PCM at its own 8 kHz). Returns ``out``.
    """
    recordings = sorted((data / "fsdd" / "recordings").glob("*.wav"))
    if not recordings:
        raise FileNotFoundError(f"no FSDD recordings under {data / 'fsdd' / 'recordings'}")
    labels = [int(path.name.split("_")[0]) for path in recordings]
    for index in per_class_choice(labels, count // 10, seed):
        source = recordings[index]
        folder = out / str(labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        samples, rate = sf.read(str(source), dtype="int16")
        sf.write(str(folder / source.name), samples, rate, subtype="PCM_16")
    return out


def write_split_folders(splits: dict[str, list[Path]], out: Path) -> Path:
    """Copy each split's files to ``out/<split>/<class>/<name>`` (the class is the file's folder)."""
    for split, paths in splits.items():
        for path in paths:
            target = out / split / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return out


# ------------------------------------------------------------------------------------ train and split
def train(kind: str, root: Path, run_dir: Path, extra: Sequence[str] = ()) -> tuple[dict[str, Any], float]:
    """``omniformer-train`` with the defaults for a ``kind`` folder; its ``results.json`` and wall seconds."""
    command = [sys.executable, "-m", "omniformer.train", *COMMANDS[kind], f"data.root={root}"]
    command += [f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.out"
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return json.loads((run_dir / "results.json").read_text()), seconds


def sample_paths(dataset: Any) -> list[Path]:
    """File of each item of an image data module's split, through its (nested) index subsets."""
    if hasattr(dataset, "samples"):  # torchvision ImageFolder
        return [Path(path) for path, _ in dataset.samples]
    inner = sample_paths(dataset.dataset)
    return [inner[i] for i in dataset.indices]


def run_splits(run_dir: Path) -> dict[str, list[Path]]:
    """The files of each split of a finished run, from the data module its saved config builds.

    The run's ``.hydra/config.yaml`` is instantiated and set up as ``omniformer-train`` did, so the
    split comes from the framework's own code (``omniformer.data.splits``), in the order it serves.
    """
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    if hasattr(datamodule, "splits"):  # audio: split name → [(path, label)]
        return {split: [Path(path) for path, _ in datamodule.splits[split]] for split in SPLITS}
    sets = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}
    return {split: sample_paths(dataset) for split, dataset in sets.items()}


# ------------------------------------------------------------------------------------------ baseline
def pixel_features(paths: Sequence[Path]) -> torch.Tensor:
    """Raw pixels in [0, 1], one row per image (every image must have the same size)."""
    rows = [np.asarray(Image.open(path).convert("L"), dtype=np.float64).ravel() / 255.0 for path in paths]
    return torch.from_numpy(np.stack(rows))


def mfcc_features(paths: Sequence[Path], n_mfcc: int = 20) -> torch.Tensor:
    """Per-clip mean of 20 MFCCs (25 ms windows, 10 ms hops, 40 mel bands), read with ``soundfile``."""
    import torchaudio

    transforms: dict[int, torchaudio.transforms.MFCC] = {}
    rows = []
    for path in paths:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
        if rate not in transforms:
            window = round(0.025 * rate)
            hop = round(0.010 * rate)
            melkwargs = {"n_fft": window, "win_length": window, "hop_length": hop, "n_mels": 40}
            transforms[rate] = torchaudio.transforms.MFCC(rate, n_mfcc=n_mfcc, melkwargs=melkwargs)
        mfcc = transforms[rate](torch.from_numpy(samples.mean(axis=1)))  # n_mfcc × frames
        rows.append(mfcc.mean(dim=1).double())
    return torch.stack(rows)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: the weights and biases that minimise the mean cross-entropy
    plus ``l2/2 · ||W||²``.

    Full-batch L-BFGS with a strong-Wolfe line search, in float64, run to its tolerances.
    """
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=2000,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Share of rows whose highest score is their label."""
    return float(((x @ weight + bias).argmax(dim=1) == y).double().mean())


def baseline(kind: str, splits: dict[str, list[Path]]) -> dict[str, Any]:
    """Logistic regression on ``splits`` (labels are the files' folder names): the L2 with the best
    validation accuracy, and its validation and test accuracy. Audio features are standardised with
    the training split's mean and std; pixels are used as they are."""
    features = pixel_features if kind == "image" else mfcc_features
    classes = sorted({path.parent.name for paths in splits.values() for path in paths})
    xs = {split: features(paths) for split, paths in splits.items()}
    ys = {s: torch.tensor([classes.index(p.parent.name) for p in paths]) for s, paths in splits.items()}
    if kind == "audio":
        mean, std = xs["train"].mean(dim=0), xs["train"].std(dim=0).clamp_min(1e-8)
        xs = {split: (x - mean) / std for split, x in xs.items()}
    best: dict[str, Any] | None = None
    for l2 in L2_GRID:
        weight, bias = fit_logistic(xs["train"], ys["train"], len(classes), l2)
        val = accuracy(xs["val"], ys["val"], weight, bias)
        if best is None or val > best["val_acc"]:
            best = {"l2": l2, "val_acc": val, "test_acc": accuracy(xs["test"], ys["test"], weight, bias)}
    return best


# -------------------------------------------------------------------------------------------- table
def measure(kind: str, count: int, work: Path, seed: int = 0, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Export a ``kind`` folder of ``count`` files, train on it (fractions, then split folders) and fit
    the baseline on the run's split: one row of the table."""
    folder = work / f"{kind}_folder"
    split_folder = work / f"{kind}_split_folders"
    for old in (folder, split_folder, work / "runs" / kind, work / "runs" / f"{kind}_split"):
        shutil.rmtree(old, ignore_errors=True)
    (export_images if kind == "image" else export_audio)(folder, count, seed)
    results, seconds = train(kind, folder, work / "runs" / kind, extra)
    splits = run_splits(work / "runs" / kind)
    base = baseline(kind, splits)
    write_split_folders(splits, split_folder)
    split_results, split_seconds = train(kind, split_folder, work / "runs" / f"{kind}_split", extra)
    split_splits = run_splits(work / "runs" / f"{kind}_split")
    # The same files in the same order, split by fractions and by folders (names relative to their split).
    same_order = all(
        [p.name for p in splits[s]] == [p.name for p in split_splits[s]]
        and [p.parent.name for p in splits[s]] == [p.parent.name for p in split_splits[s]]
        for s in SPLITS
    )
    acc, split_acc = results["test_acc"], split_results["test_acc"]
    return {
        "folder": kind,
        "files": count,
        "split": {split: len(paths) for split, paths in splits.items()},
        "command": "omniformer-train " + " ".join([*COMMANDS[kind], f"data.root=<{kind} folder>", *extra]),
        "test_acc": acc,
        "val_acc": results.get("val_acc"),
        "steps": results.get("steps"),
        "baseline": base,
        "difference_pp": round(100 * (acc - base["test_acc"]), 2),
        "split_folder_test_acc": split_acc,
        "split_folder_equal": acc == split_acc,
        "split_folder_same_order": same_order,
        "wall_seconds": round(seconds, 1),
        "split_folder_wall_seconds": round(split_seconds, 1),
    }


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The table: one row per folder."""
    lines = [
        "| folder | files | train / val / test | omniformer default, test | baseline (log. reg.), test "
        "| difference | split folders, test | wall time (fractions / split folders) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        what = "images, MNIST PNGs" if row["folder"] == "image" else "clips, FSDD WAVs"
        feature = "pixels" if row["folder"] == "image" else "MFCC means"
        same = "equal" if row["split_folder_equal"] else "differs"
        lines.append(
            f"| {row['folder']} folder ({what}) | {row['files']:,} | "
            f"{row['split']['train']} / {row['split']['val']} / {row['split']['test']} | "
            f"{100 * row['test_acc']:.2f}% | {100 * row['baseline']['test_acc']:.2f}% ({feature}) | "
            f"{row['difference_pp']:+.2f} pp | {100 * row['split_folder_test_acc']:.2f}% ({same}) | "
            f"{row['wall_seconds'] / 60:.1f} / {row['split_folder_wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser("python -m benchmarks.small_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results folder")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "small_data", help="folders and runs")
    parser.add_argument("--images", type=int, default=1500, help="images to export (a tenth per class)")
    parser.add_argument("--clips", type=int, default=300, help="clips to export (a tenth per digit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of files")
    parser.add_argument("--only", choices=("image", "audio"), help="measure one folder")
    parser.add_argument("overrides", nargs="*", help="extra omniformer-train overrides (none: the defaults)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts = {"image": args.images, "audio": args.clips}
    kinds = [args.only] if args.only else ["image", "audio"]
    rows = [measure(kind, counts[kind], args.work, args.seed, args.overrides) for kind in kinds]
    table = markdown(rows)
    result = {
        "benchmark": "small_data",
        "created": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.small_data", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "small_data.json", result)
    (args.out / "small_data.md").write_text(table, encoding="utf-8")
    print(table, end="")
    return result


if __name__ == "__main__":
    main()

"""Image throughput: images/s for training and inference per model size, omniformer vs a plain loop.

    .venv/bin/python benchmarks/image_throughput.py              # tiny:128:30 small:128:12 base:16:8
    .venv/bin/python benchmarks/image_throughput.py --cases tiny:128:40 --rounds 3  # size:batch:steps
    .venv/bin/python benchmarks/image_throughput.py --accuracy-run /tmp/image_runs/mnist_experiment

The model is the one ``omniformer-train task=image_classification data=mnist model=<size>`` builds
(composed from the same configs; 7×7 patches → 16 tokens). For each size, the *same* model
initialisation and the *same* batches (taken once from the MNIST data module, transforms applied)
go through:

* ``omniformer``: ``Trainer.fit`` on the :class:`ClassificationTask` (loss, logging, gradient
  clipping, AdamW + warmup/cosine), and ``Trainer.predict`` (``predict_step``: softmax);
* ``plain``: a hand-written loop on ``task.net`` with the same loss, clipping, optimizer and schedule
  (:func:`omniformer.bench.runners.train_plain`), and a forward + softmax loop in inference mode.

Variants alternate in rounds (omniformer, plain, then plain, omniformer, ...) so load from other
processes falls on both alike; the ratio is omniformer's images/s over plain's (1.0 = no overhead).
The data path is measured on its own: images/s of the MNIST train loader (decode + augmentation +
normalisation), which runs beside the model in loader workers during real training.

Results: ``benchmarks/results/image_throughput.json`` and ``.md``; with ``--accuracy-run`` (an
``omniformer-train`` run folder, repeatable) the Markdown also lists accuracy runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omniformer.bench.machine import machine_info  # noqa: E402
from omniformer.bench.runners import Measurement, StepClock, train_lightning, train_plain  # noqa: E402
from omniformer.bench.workloads import Workload, prefetch_batches  # noqa: E402
from omniformer.files import atomic_write_text, write_json  # noqa: E402


class BatchList(L.LightningDataModule):
    """Serves a fixed list of ready batches (so Lightning and the plain loop see the same ones)."""

    def __init__(self, batches: list, inputs_only: bool = False) -> None:
        super().__init__()
        self.batches = [b[0] for b in batches] if inputs_only else batches

    def _loader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


class PredictTimer(L.Callback):
    """Marks the end of every predict batch for :class:`StepClock`."""

    def __init__(self, warmup: int) -> None:
        self.clock = StepClock(torch.device("cpu"), warmup)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.clock.mark()


def cycled(batches: list, count: int) -> list:
    """``count`` batches taken round-robin from ``batches``."""
    return [batches[i % len(batches)] for i in range(count)]


def infer_plain(task, batches: list, warmup: int) -> Measurement:
    """Forward + softmax on ``task.net`` in inference mode, the same work as ``predict_step``."""
    net = task.net.eval()
    clock = StepClock(torch.device("cpu"), warmup)
    with torch.inference_mode():
        for inputs, _ in batches:
            torch.softmax(net(task.modality, task.head, inputs).float(), dim=-1)
            clock.mark()
    net.train()
    return Measurement(clock.step_seconds())


def infer_lightning(task, batches: list, warmup: int) -> Measurement:
    """``Trainer.predict`` over the same batches (omniformer's inference path)."""
    timer = PredictTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.predict(task, datamodule=BatchList(batches, inputs_only=True), return_predictions=False)
    return Measurement(timer.clock.step_seconds())


def loader_rate(datamodule, batches: int) -> float:
    """Images/s of the data module's train loader in this process (decode + transforms + collate)."""
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for _, (images, _) in zip(range(batches), iterator):
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def images_per_s(m: Measurement, batch: int) -> float:
    return batch / m.mean_step


def run_case(root: str, size: str, batch: int, steps: int, warmup: int, rounds: int) -> dict:
    """Training and inference of one model size, both loops, interleaved rounds."""
    workload = Workload(
        name="image_mnist",
        overrides=["task=image_classification", "data=mnist", f"data.root={root}", "data.num_workers=0"],
        unit="samples",
    )
    cfg = workload.config(size, [f"data.batch_size={batch}", "trainer.accelerator=cpu"])
    built = workload.build(cfg)
    batches = cycled(prefetch_batches(built.datamodule, min(warmup + steps, 50)), warmup + steps)
    fixed = BatchList(batches)
    tasks = {"omniformer": built.task, "plain": workload.build(cfg).task}  # identically seeded
    train = {name: Measurement() for name in tasks}
    infer = {name: Measurement() for name in tasks}
    cpu = torch.device("cpu")
    for round_ in range(rounds):
        order = ["omniformer", "plain"] if round_ % 2 == 0 else ["plain", "omniformer"]
        for name in order:
            task = tasks[name]
            if name == "omniformer":
                m = train_lightning(cfg, task, fixed, steps=steps, warmup=warmup, device=cpu)
                i = infer_lightning(task, batches, warmup)
            else:
                clip = cfg.trainer.get("gradient_clip_val")
                m = train_plain(workload, task, batches, steps=steps, warmup=warmup, device=cpu, clip=clip)
                i = infer_plain(task, batches, warmup)
            train[name], infer[name] = train[name].merge(m), infer[name].merge(i)
            print(
                f"{size} round {round_ + 1} {name}: train {images_per_s(m, batch):.1f} img/s, "
                f"infer {images_per_s(i, batch):.1f} img/s",
                flush=True,
            )
    row = {
        "model": size,
        "batch_size": batch,
        "steps": steps,
        "params": sum(p.numel() for p in built.task.net.parameters()),
    }
    for mode, results in (("train", train), ("infer", infer)):
        ours, plain = images_per_s(results["omniformer"], batch), images_per_s(results["plain"], batch)
        median_ratio = statistics.median(results["plain"].step_seconds) / statistics.median(
            results["omniformer"].step_seconds
        )
        row[mode] = {
            "omniformer_images_per_s": round(ours, 1),
            "plain_images_per_s": round(plain, 1),
            "ratio": round(ours / plain, 4),
            "ratio_median_step": round(median_ratio, 4),
            "timed_steps": results["omniformer"].steps,
        }
    row["loader_images_per_s"] = round(loader_rate(built.datamodule, 10), 1)
    return row


def accuracy_row(run_dir: Path) -> dict:
    """Test accuracy, minutes and the command of an ``omniformer-train`` run folder."""
    import json

    results = json.loads((run_dir / "results.json").read_text())
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    shown = [o for o in overrides if not o.startswith("hydra.") and not o.startswith("callbacks.progress")]
    return {
        "run_dir": str(run_dir),
        "command": "omniformer-train " + " ".join(shown),
        "test_acc": results.get("test_acc"),
        "val_acc": results.get("val_acc"),
        "fit_minutes": round(results["wall_seconds"] / 60, 2),
        "steps": results.get("steps"),
        "samples_per_sec": results.get("samples_per_sec"),
    }


def markdown(result: dict) -> str:
    """The Markdown tables of a result."""
    m = result["machine"]
    lines = [
        "# Image throughput (MNIST, `task=image_classification data=mnist`, 7×7 patches → 16 tokens)",
        "",
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"lightning {m['lightning']}; load average {result['load_average_start']} at start, "
        f"{result['load_average_end']} at the end (other processes share the cores: compare the ratios, "
        "measured side by side, not the absolute rates). "
        f"Per loop: {result['warmup']} warm-up steps, then the listed timed steps × {result['rounds']} "
        "interleaved rounds.",
        "",
        "| model | params | batch | timed steps | train img/s omniformer | train img/s plain | ratio | "
        "infer img/s omniformer | infer img/s plain | ratio | loader img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        t, i = row["train"], row["infer"]
        cells = [
            row["model"],
            f"{row['params'] / 1e6:.2f}M",
            row["batch_size"],
            f"{row['steps']}×{result['rounds']}",
            t["omniformer_images_per_s"],
            t["plain_images_per_s"],
            f"{t['ratio']:.3f}",
            i["omniformer_images_per_s"],
            i["plain_images_per_s"],
            f"{i['ratio']:.3f}",
            row["loader_images_per_s"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "ratio = omniformer images/s ÷ plain-loop images/s (mean over all timed steps; the JSON also has "
        "the median-step ratio). loader = one process decoding, augmenting and normalising MNIST "
        "training images (training uses `data.num_workers` such processes beside the model).",
    ]
    if result.get("accuracy"):
        lines += [
            "",
            "## Accuracy runs",
            "",
            "| command | test acc | val acc | fit minutes | steps | train img/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for a in result["accuracy"]:
            lines.append(
                f"| `{a['command']}` | {a['test_acc']:.4f} | {a['val_acc']:.4f} | {a['fit_minutes']} | "
                f"{a['steps']} | {a['samples_per_sec']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Measure every case and write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=os.environ.get("OMNIFORMER_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["tiny:128:30", "small:128:12", "base:16:8"],
        help="size:batch[:timed steps per round]",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round when a case names none")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accuracy-run", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (Path(args.root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under --root {args.root} (expected {args.root}/MNIST/raw)")
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows = []
    for case in args.cases:
        size, batch, steps = [*case.split(":"), "", ""][:3]
        steps = int(steps or args.steps)
        rows.append(run_case(args.root, size, int(batch or 128), steps, args.warmup, args.rounds))
    result = {
        "benchmark": "image_throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info("cpu"),
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "warmup": args.warmup,
        "rounds": args.rounds,
        "rows": rows,
        "accuracy": [accuracy_row(run) for run in args.accuracy_run],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "image_throughput.json", result)
    atomic_write_text(args.out / "image_throughput.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

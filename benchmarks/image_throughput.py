"""Image throughput: images/s for training and inference per model size, omniformer vs a plain loop.

    python -m benchmarks.image_throughput              # tiny:128:30 small:128:12 base:16:8
    python -m benchmarks.image_throughput --cases tiny:128:40 --rounds 3  # size:batch:steps
    python -m benchmarks.image_throughput --accuracy-run /tmp/image_runs/mnist_experiment

The model is the one ``omniformer-train task=image_classification data=mnist model=<size>`` builds
(composed from the same configs; 7×7 patches → 16 tokens). For each size, the *same* model
initialisation and the *same* batches (taken once from the MNIST data module, transforms applied)
go through:

* ``omniformer``: ``Trainer.fit`` on the :class:`ClassificationTask` (loss, logging, gradient
  clipping, AdamW + warmup/cosine), and ``Trainer.predict`` (``predict_step``: softmax);
* ``plain``: the suite's hand-written loop on ``task.net`` with the same loss, clipping, optimizer
  and schedule (:func:`benchmarks.runners.train_plain`), and ``predict_step`` called in a plain
  inference-mode loop (:func:`benchmarks.runners.infer`).

Variants alternate in rounds (omniformer, plain, then plain, omniformer, ...) so load from other
processes falls on both alike; the ratio is omniformer's images/s over plain's (1.0 = no overhead),
on the wall clock and on this process's CPU clock (steadier where other processes share the cores).
The data path is measured on its own: images/s of the MNIST train loader (decode + augmentation +
normalisation), which runs beside the model in loader workers during real training. And end to end
(``--end-to-end``), data loading included: ``Trainer.fit`` on the MNIST data module as ``data=mnist``
configures it, against a textbook plain loop over ``torchvision.datasets.MNIST`` with the same crop
and normalisation in a ``DataLoader`` (as many workers), and a plain loop over pre-made batches.

Results: ``benchmarks/results/image_throughput.json`` and ``.md``; with ``--accuracy-run`` (an
``omniformer-train`` run folder, repeatable) the Markdown also lists accuracy runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from benchmarks.machine import machine_info
from benchmarks.runners import Measurement, infer, infer_lightning, train_lightning, train_plain
from benchmarks.workloads import Workload, prefetch_batches
from omniformer.files import atomic_write_text, write_json

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


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


def cycled(batches: list, count: int) -> list:
    """``count`` batches taken round-robin from ``batches``."""
    return [batches[i % len(batches)] for i in range(count)]


def accumulate(results: dict[str, Measurement], name: str, m: Measurement) -> Measurement:
    """Add a round's measurement to ``results[name]``; return it."""
    results[name] = results[name].merge(m) if name in results else m
    return m


def images_per_s(batch: int, m: Measurement) -> float:
    """Images per second of elapsed time over the timed steps."""
    return round(batch / m.mean_step, 1)


def images_per_cpu_s(batch: int, m: Measurement) -> float:
    """Images per second of this process's CPU time over the timed steps."""
    return round(batch / m.cpu_step, 1)


def loader_rate(datamodule, batches: int) -> dict:
    """Images/s of the data module's train loader in this process (decode + transforms + collate)."""
    iterator = iter(datamodule.train_dataloader())
    next(iterator)
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    for _, (images, _) in zip(range(batches), iterator):
        seen += images.shape[0]
    return {
        "wall": round(seen / (time.perf_counter() - wall), 1),
        "cpu": round(seen / (time.process_time() - cpu), 1),
    }


class TextbookMNIST:
    """What a plain PyTorch script feeds its loop: ``torchvision.datasets.MNIST`` with a v2 pipeline
    (PIL → tensor, the same ±2 px ``RandomCrop``, scale, normalise) in a shuffled ``DataLoader`` with
    the data module's batch size and worker count. Endless: epochs follow each other."""

    def __init__(self, root: str, batch_size: int, num_workers: int) -> None:
        from torchvision import datasets
        from torchvision.transforms import v2

        transform = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomCrop(28, padding=2),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.1307], [0.3081]),
            ]
        )
        dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            drop_last=True,
        )

    def __iter__(self):
        while True:
            yield from self.loader


def fit_with_datamodule(cfg, task, datamodule, steps: int, warmup: int) -> Measurement:
    """``Trainer.fit`` on the real MNIST data module as ``omniformer-train`` runs it: its loader made
    resumable (seeded samples, loader workers, the configured transforms) and the default callbacks
    and logger (checkpointing, non-finite guard, step seeding, throughput, learning-rate monitor,
    progress bar, CSV logs)."""
    from omniformer.resume import RestoreLoaderState, make_resumable

    make_resumable(datamodule, int(cfg.seed))
    return train_lightning(
        cfg,
        task,
        datamodule,
        steps=steps,
        warmup=warmup,
        device=CPU,
        default_callbacks=True,
        callbacks=[RestoreLoaderState()],
    )


def mnist_workload(root: str, *overrides: str) -> Workload:
    """``task=image_classification data=mnist`` with the MNIST files under ``root``."""
    return Workload(
        name="image_mnist",
        overrides=["task=image_classification", "data=mnist", f"data.root={root}", *overrides],
        unit="samples",
    )


def run_end_to_end(root: str, size: str, batch: int, steps: int, warmup: int, rounds: int) -> dict:
    """Training images/s with data loading included: omniformer (``Trainer.fit`` on the MNIST data
    module as ``data=mnist`` configures it) against a textbook plain loop (:class:`TextbookMNIST`)
    and a plain loop over pre-made batches (no data work at all), interleaved in rounds."""
    workload = mnist_workload(root)
    cfg = workload.config(size, [f"data.batch_size={batch}", "trainer.accelerator=cpu"])
    built = workload.build(cfg)
    workers = int(cfg.data.num_workers)
    clip = cfg.trainer.get("gradient_clip_val")
    premade = cycled(prefetch_batches(built.datamodule, min(warmup + steps, 50)), warmup + steps)
    tasks = {name: workload.build(cfg).task for name in ("omniformer", "textbook", "premade")}
    timed: dict[str, Measurement] = {}
    for round_ in range(rounds):
        order = list(tasks) if round_ % 2 == 0 else list(reversed(tasks))
        for name in order:
            if name == "omniformer":
                datamodule = workload.build_data(cfg)
                m = fit_with_datamodule(cfg, tasks[name], datamodule, steps, warmup)
            else:
                source = TextbookMNIST(root, batch, workers) if name == "textbook" else premade
                m = train_plain(tasks[name], source, steps=steps, warmup=warmup, device=CPU, clip=clip)
            accumulate(timed, name, m)
            print(f"end-to-end {size} round {round_ + 1} {name}: {images_per_s(batch, m)} img/s", flush=True)
    rates = {name: images_per_s(batch, m) for name, m in timed.items()}
    medians = {name: m.median_step for name, m in timed.items()}
    return {
        "model": size,
        "batch_size": batch,
        "steps": steps,
        "num_workers": workers,
        "images_per_s": rates,
        "ratio_vs_textbook": round(rates["omniformer"] / rates["textbook"], 4),
        "ratio_vs_premade": round(rates["omniformer"] / rates["premade"], 4),
        "median_ratio_vs_textbook": round(medians["textbook"] / medians["omniformer"], 4),
        "median_ratio_vs_premade": round(medians["premade"] / medians["omniformer"], 4),
        "timed_steps": timed["omniformer"].steps,
    }


def run_case(root: str, size: str, batch: int, steps: int, warmup: int, rounds: int) -> dict:
    """Training and inference of one model size through both loops, in interleaved rounds."""
    workload = mnist_workload(root, "data.num_workers=0")
    cfg = workload.config(size, [f"data.batch_size={batch}", "trainer.accelerator=cpu"])
    built = workload.build(cfg)
    batches = cycled(prefetch_batches(built.datamodule, min(warmup + steps, 50)), warmup + steps)
    tasks = {"omniformer": built.task, "plain": workload.build(cfg).task}  # identically seeded
    train: dict[str, Measurement] = {}
    infer_: dict[str, Measurement] = {}
    clip = cfg.trainer.get("gradient_clip_val")
    for round_ in range(rounds):
        order = ["omniformer", "plain"] if round_ % 2 == 0 else ["plain", "omniformer"]
        for name in order:
            task = tasks[name]
            if name == "omniformer":
                t = train_lightning(cfg, task, BatchList(batches), steps=steps, warmup=warmup, device=CPU)
                i = infer_lightning(task, BatchList(batches, inputs_only=True), warmup=warmup, device=CPU)
            else:
                t = train_plain(task, batches, steps=steps, warmup=warmup, device=CPU, clip=clip)
                # predict_step called directly: the work Trainer.predict does per batch, no Lightning
                i = infer(
                    task,
                    batches,
                    steps=steps,
                    warmup=warmup,
                    device=CPU,
                    step=lambda b, task=task: task.predict_step(b[:-1], 0),
                )
            accumulate(train, name, t)
            accumulate(infer_, name, i)
            print(
                f"{size} round {round_ + 1} {name}: train {images_per_s(batch, t)} img/s "
                f"(cpu {images_per_cpu_s(batch, t)}), infer {images_per_s(batch, i)}",
                flush=True,
            )
    row = {
        "model": size,
        "batch_size": batch,
        "steps": steps,
        "params": sum(p.numel() for p in built.task.net.parameters()),
    }
    for mode, results in (("train", train), ("infer", infer_)):
        ours, plain = results["omniformer"], results["plain"]
        row[mode] = {
            "omniformer_images_per_s": images_per_s(batch, ours),
            "plain_images_per_s": images_per_s(batch, plain),
            "ratio_wall": round(plain.wall_seconds / ours.wall_seconds, 4),
            "ratio_wall_median_step": round(plain.median_step / ours.median_step, 4),
            "omniformer_images_per_cpu_s": images_per_cpu_s(batch, ours),
            "plain_images_per_cpu_s": images_per_cpu_s(batch, plain),
            "ratio_cpu": round(plain.cpu_seconds / ours.cpu_seconds, 4),
            "timed_steps": ours.steps,
        }
    row["loader_images_per_s"] = loader_rate(built.datamodule, 10)
    return row


def accuracy_row(run_dir: Path) -> dict:
    """Test accuracy, minutes and the command of an ``omniformer-train`` run folder."""
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
        "| model | params | batch | timed steps | train img/s omniformer | train img/s plain | "
        "ratio (wall) | ratio (CPU) | infer img/s omniformer | infer img/s plain | ratio (wall) | "
        "ratio (CPU) | loader img/s (per CPU s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
            f"{t['ratio_wall']:.3f}",
            f"**{t['ratio_cpu']:.3f}**",
            i["omniformer_images_per_s"],
            i["plain_images_per_s"],
            f"{i['ratio_wall']:.3f}",
            f"**{i['ratio_cpu']:.3f}**",
            f"{row['loader_images_per_s']['wall']} ({row['loader_images_per_s']['cpu']})",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "ratio = omniformer images/s ÷ plain-loop images/s over the same model, initialisation and batches "
        "(1.0 = no overhead). Wall: images per second of elapsed time; CPU: images per second of this "
        "process's CPU time, which other processes on shared cores do not inflate — the steadier "
        "measure of per-step framework work here. loader = one process decoding, augmenting and "
        "normalising MNIST training images (training runs `data.num_workers` of them beside the model).",
    ]
    if result.get("end_to_end"):
        lines += [
            "",
            "## End to end: training images/s with data loading",
            "",
            "omniformer = `Trainer.fit` on the MNIST data module exactly as `data=mnist` configures it "
            "(±2 px crops, seeded resumable sampling, loader workers) with omniformer-train's default "
            "callbacks and CSV logger; textbook = a hand-written loop over "
            "`torchvision.datasets.MNIST` + the same v2 crop/normalise in a `DataLoader` with as many "
            "workers; pre-made = a hand-written loop over batches prepared in advance (no data work). Same "
            "model, initialisation, optimizer and clipping; interleaved rounds.",
            "",
            "| model | batch | workers | timed steps | omniformer img/s | textbook img/s | pre-made img/s | "
            "vs textbook (mean / median step) | vs pre-made (mean / median step) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in result["end_to_end"]:
            r = row["images_per_s"]
            lines.append(
                f"| {row['model']} | {row['batch_size']} | {row['num_workers']} | {row['timed_steps']} | "
                f"{r['omniformer']} | {r['textbook']} | {r['premade']} | "
                f"**{row['ratio_vs_textbook']:.3f}** / {row['median_ratio_vs_textbook']:.3f} | "
                f"**{row['ratio_vs_premade']:.3f}** / {row['median_ratio_vs_premade']:.3f} |"
            )
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
    if result.get("notes"):
        lines += ["", "## Notes", "", *(f"* {note}" for note in result["notes"])]
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
    parser.add_argument(
        "--end-to-end",
        nargs="*",
        default=["tiny:128:40"],
        help="size:batch[:timed steps per round] measured with data loading included (none: skip)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round when a case names none")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accuracy-run", type=Path, action="append", default=[])
    parser.add_argument("--note", action="append", default=[], help="a line for the Markdown's notes")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: add --accuracy-run / --note to the existing JSON and rewrite the Markdown",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        result = json.loads((args.out / "image_throughput.json").read_text())
        result["accuracy"] = [*result.get("accuracy", []), *(accuracy_row(r) for r in args.accuracy_run)]
        result["notes"] = [*result.get("notes", []), *args.note]
        write_json(args.out / "image_throughput.json", result)
        atomic_write_text(args.out / "image_throughput.md", markdown(result))
        print(markdown(result))
        return result
    if not (Path(args.root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under --root {args.root} (expected {args.root}/MNIST/raw)")
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows = []
    for case in args.cases:
        size, batch, steps = [*case.split(":"), "", ""][:3]
        steps = int(steps or args.steps)
        rows.append(run_case(args.root, size, int(batch or 128), steps, args.warmup, args.rounds))
    end_to_end = []
    for case in args.end_to_end:
        size, batch, steps = [*case.split(":"), "", ""][:3]
        steps = int(steps or args.steps)
        end_to_end.append(run_end_to_end(args.root, size, int(batch or 128), steps, args.warmup, args.rounds))
    result = {
        "benchmark": "image_throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info("cpu"),
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "warmup": args.warmup,
        "rounds": args.rounds,
        "rows": rows,
        "end_to_end": end_to_end,
        "accuracy": [accuracy_row(run) for run in args.accuracy_run],
        "notes": list(args.note),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "image_throughput.json", result)
    atomic_write_text(args.out / "image_throughput.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

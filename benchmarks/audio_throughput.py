"""Audio throughput: clips/s for training and inference, with log-mel inside the model or in the loader.

    python -m benchmarks.audio_throughput                       # FSDD from ../shared/data/fsdd
    python -m benchmarks.audio_throughput --batches 30 --workers 0 2
    python -m benchmarks.audio_throughput --accuracy-run outputs/audio_fsdd  # + the accuracy row
    python -m benchmarks.audio_throughput --accuracy-only \
        --accuracy-run outputs/a "outputs/b::OMP_NUM_THREADS=1"   # only refresh the accuracy rows

The model is the one ``omniformer-train experiment=spoken_digits`` builds (composed from the same
configs). Two places for the log-mel front end, with the *same* batches (seeded length buckets):

* ``in-model``: loaders yield padded waveforms; the tokenizer computes log-mel on the model's device
  (what omniformer does);
* ``in-loader``: loader workers compute each clip's log-mel on the CPU with the tokenizer's own
  front end, batches carry padded spectrograms, and the model starts at
  :meth:`AudioSpectrogramTokenizer.tokens_from_log_mel`.

Each case runs ``--batches`` timed batches after ``--warmup`` untimed ones through the suite's
loops (:func:`benchmarks.runners.train_plain` — the task's loss, optimizer, schedule and clipping —
and :func:`benchmarks.runners.infer`), ``--repeats`` times, the cases taking turns (medians
reported), with the loader's time included (that is where in-loader features cost). Results:
``benchmarks/results/audio_throughput.json`` and ``benchmarks/results/audio_throughput.md``. With
``--accuracy-run`` the Markdown also records ``omniformer-train`` runs' test accuracy, wall time and
command (from their ``results.json`` and ``.hydra/overrides.yaml``; ``DIR::PREFIX`` puts e.g. an
environment setting before the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset

from benchmarks.runners import infer, train_plain
from benchmarks.workloads import Workload
from omniformer.data.audio import AudioClips, LengthBucketSampler, PadCollate
from omniformer.files import atomic_write_text, write_json
from omniformer.tokenizers.audio import AudioSpectrogramTokenizer

REPO = Path(__file__).resolve().parents[1]


class LogMelClips(Dataset):
    """Clips as ``(log-mel n_mels×T, real frames, label)``, computed on the CPU (in loader workers)."""

    def __init__(self, clips: AudioClips, frontend: AudioSpectrogramTokenizer) -> None:
        self.clips, self.frontend = clips, frontend

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        wave, label = self.clips[index]
        with torch.no_grad():
            mel, frames = self.frontend.log_mel(wave[None])
        return mel[0], int(frames[0]), label


def collate_log_mel(batch):
    """Zero-pad spectrograms along time: ``(B×n_mels×T, frames, labels)``."""
    mels, frames, labels = zip(*batch)
    out = torch.zeros(len(mels), mels[0].shape[0], max(m.shape[1] for m in mels))
    for row, mel in enumerate(mels):
        out[row, :, : mel.shape[1]] = mel
    return out, torch.tensor(frames), torch.tensor(labels)


def build(root: str, batch_size: int):
    """The config, datamodule and task ``omniformer-train experiment=spoken_digits`` builds."""
    workload = Workload(name="fsdd_audio", overrides=["experiment=spoken_digits", f"data.root={root}"])
    cfg = workload.config(None, [f"data.batch_size={batch_size}"])
    built = workload.build(cfg)
    return cfg, built.datamodule, built.task


def log_mel_step(task):
    """``batch → (loss, logits, labels)`` for ``(log-mel, frames, labels)`` batches: the model from its
    tokenizer's second half (:meth:`AudioSpectrogramTokenizer.tokens_from_log_mel`) on."""
    net = task.net

    def step(batch):
        mel, frames, labels = batch
        tokens = net.tokenizers[task.modality].tokens_from_log_mel(mel, frames)
        logits = net.heads[task.head](net.backbone(tokens), tokens)
        return F.cross_entropy(logits.float(), labels), logits, labels

    return step


def measure(task, loader, where: str, train: bool, device, warmup: int, batches: int, clip) -> dict:
    """Clips/s over ``batches`` batches (after ``warmup``), loader time included."""
    step = task.model_step if where == "in-model" else log_mel_step(task)
    sizes: list[int] = []

    def counted(batch):
        sizes.append(int(batch[-1].shape[0]))  # the bucketed loader's last batch of an epoch is smaller
        return step(batch)

    if train:
        m = train_plain(
            task,
            loader,
            steps=batches,
            warmup=warmup,
            device=device,
            clip=clip,
            loss=lambda batch: counted(batch)[0],
        )
    else:
        m = infer(task, loader, steps=batches, warmup=warmup, device=device, step=counted)
    clips = sum(sizes[warmup:])
    return {"clips_per_s": round(clips / m.wall_seconds, 1), "ms_per_batch": round(1000 * m.mean_step, 1)}


def front_end_cost(tokenizer: AudioSpectrogramTokenizer, loader, device, batches: int) -> dict:
    """Milliseconds per batch for log-mel alone: batched on ``device`` vs clip by clip on the CPU."""
    cpu_frontend = AudioSpectrogramTokenizer(**_frontend_args(tokenizer))
    waves = [b for _, b in zip(range(batches), loader)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        tokenizer.log_mel(waves[0][0].to(device), waves[0][1].to(device))
        sync()
        start = time.perf_counter()
        for w, n, _ in waves:
            tokenizer.log_mel(w.to(device), n.to(device))
        sync()
        batched = (time.perf_counter() - start) / len(waves)
        start = time.perf_counter()
        for w, n, _ in waves:
            for row in range(w.shape[0]):
                cpu_frontend.log_mel(w[row : row + 1, : int(n[row])])
        per_clip = (time.perf_counter() - start) / len(waves)
    return {"device_batched_ms": round(1000 * batched, 2), "cpu_per_clip_ms": round(1000 * per_clip, 2)}


def _frontend_args(tok: AudioSpectrogramTokenizer) -> dict:
    return {
        "dim": tok.dim,
        "sample_rate": tok.sample_rate,
        "n_mels": tok.n_mels,
        "win_ms": 1000 * tok.win_length / tok.sample_rate,
        "hop_ms": 1000 * tok.hop_length / tok.sample_rate,
        "n_fft": tok.n_fft,
    }


def accuracy_row(spec: str) -> dict:
    """Test accuracy, times and the command of an ``omniformer-train`` run folder (``DIR[::PREFIX]``)."""
    where, _, prefix = spec.partition("::")
    run_dir = Path(where)
    results = json.loads((run_dir / "results.json").read_text())
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    shown = [o for o in overrides if not o.startswith("hydra.")]
    return {
        "run_dir": str(run_dir),
        "command": (f"{prefix} " if prefix else "") + "omniformer-train " + " ".join(shown),
        "test_acc": results.get("test_acc"),
        "val_acc": results.get("val_acc"),
        "fit_minutes": round(results["wall_seconds"] / 60, 2),
        "epochs_steps": results.get("steps"),
        "parameters": results.get("parameters"),
        "samples_per_sec": results.get("samples_per_sec"),
    }


def markdown(result: dict) -> str:
    """The Markdown table of a result."""
    m = result["machine"]
    lines = [
        "# Audio throughput (FSDD, `experiment=spoken_digits` model)",
        "",
        f"{m['device']}, {m['cpu_count']} CPU cores visible, torch {m['torch']}, "
        f"{m['threads']} intra-op threads; "
        f"batch {result['batch_size']} clips (length-bucketed), {result['batches']} timed batches, median of "
        f"{result['repeats']} interleaved repeats (all runs in the JSON), "
        f"load average at start {m['load_average']}. Loader time is included.",
        "",
        "| mode | log-mel | loader workers | clips/s | ms/batch |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        cells = [row["mode"], row["features"], row["workers"], row["clips_per_s"], row["ms_per_batch"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    fe = result["front_end"]
    lines += [
        "",
        f"Log-mel alone: {fe['device_batched_ms']} ms per batch batched on {m['device_type']} vs "
        f"{fe['cpu_per_clip_ms']} ms per batch clip by clip on the CPU (what one loader worker does).",
    ]
    if result.get("accuracy"):
        lines += [
            "",
            "## Accuracy runs",
            "",
            "| command | test acc | val acc | fit minutes | steps | clips/s (train loop) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for a in result["accuracy"]:
            lines.append(
                f"| `{a['command']}` | {a['test_acc']:.4f} | {a['val_acc']:.4f} | {a['fit_minutes']} | "
                f"{a['epochs_steps']} | {a['samples_per_sec']} |"
            )
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run the cases and write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--accuracy-run", nargs="+", default=[], metavar="DIR[::PREFIX]")
    parser.add_argument("--accuracy-only", action="store_true", help="keep the throughput rows of the JSON")
    parser.add_argument("--note", default=None, help="a sentence on the conditions, shown under the tables")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.accuracy_only:
        result = json.loads((args.out / "audio_throughput.json").read_text())
        result["accuracy"] = [accuracy_row(spec) for spec in args.accuracy_run]
        result["note"] = args.note or result.get("note")
        write_json(args.out / "audio_throughput.json", result)
        atomic_write_text(args.out / "audio_throughput.md", markdown(result))
        print(markdown(result))
        return result
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)

    cfg, datamodule, task = build(args.root, args.batch_size)
    net = task.net.to(device)
    clip = cfg.trainer.get("gradient_clip_val")
    items = datamodule.splits["train"]
    lengths = [datamodule._frames(path) for path, _ in items]
    clips = AudioClips(items, datamodule.sample_rate, None)
    tokenizer = net.tokenizers["audio"]
    frontend = AudioSpectrogramTokenizer(**_frontend_args(tokenizer))
    loaders = {}
    for workers in args.workers:
        for where in ("in-model", "in-loader"):
            loaders[workers, where] = DataLoader(
                clips if where == "in-model" else LogMelClips(clips, frontend),
                batch_size=args.batch_size,
                sampler=LengthBucketSampler(lengths, args.batch_size, seed=0),
                collate_fn=PadCollate() if where == "in-model" else collate_log_mel,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
            )
    # Cases take turns, repeat after repeat, so a load spike on a shared machine hits all of them
    # alike; the table reports the median of the repeats.
    samples: dict[tuple, list[dict]] = {}
    for repeat in range(args.repeats):
        for (workers, where), loader in loaders.items():
            for mode in ("train", "infer"):
                numbers = measure(
                    task, loader, where, mode == "train", device, args.warmup, args.batches, clip
                )
                samples.setdefault((mode, where, workers), []).append(numbers)
                print(
                    {"repeat": repeat, "mode": mode, "features": where, "workers": workers, **numbers},
                    flush=True,
                )
    rows = []
    for (mode, where, workers), runs in samples.items():
        speeds = sorted(r["clips_per_s"] for r in runs)
        times = sorted(r["ms_per_batch"] for r in runs)
        rows.append(
            {
                "mode": mode,
                "features": where,
                "workers": workers,
                "clips_per_s": speeds[len(speeds) // 2],
                "ms_per_batch": times[len(times) // 2],
                "clips_per_s_runs": [r["clips_per_s"] for r in runs],
            }
        )
    rows.sort(key=lambda r: (r["mode"] != "train", r["workers"], r["features"]))
    plain = DataLoader(
        clips,
        batch_size=args.batch_size,
        sampler=LengthBucketSampler(lengths, args.batch_size, seed=0),
        collate_fn=PadCollate(),
    )
    result = {
        "benchmark": "audio_throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or "CPU",
            "device_type": device.type,
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
        "model": {
            "dim": cfg.model.dim,
            "depth": cfg.model.depth,
            "tokens": cfg.task.net.tokenizers.audio.tokens,
        },
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "rows": rows,
        "front_end": front_end_cost(tokenizer, plain, device, min(args.batches, 10)),
        "accuracy": [accuracy_row(spec) for spec in args.accuracy_run],
        "note": args.note,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "audio_throughput.json", result)
    atomic_write_text(args.out / "audio_throughput.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

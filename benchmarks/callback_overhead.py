"""Fixed per-step cost of Lightning's loop and of each callback omniformer-train adds, in CPU time.

    python -m benchmarks.callback_overhead              # ~2 minutes on 2 busy cores
    python -m benchmarks.callback_overhead --steps 500 --rounds 6

On a toy model (1 block, 16 wide, batch 1 × 8 tokens) a training step costs a couple of
milliseconds, so what the framework adds per step — the Lightning loop, each default callback — is a
large, measurable share. Every variant runs the same batches in interleaved rounds; the figure is
the process CPU time per step (``time.process_time``, which hardly moves when other processes take
the cores), median over rounds, minus the plain hand-written loop's. Add these milliseconds to a
real model's step time to get the overhead fraction at that size.

Variants: ``plain`` (hand-written loop), ``lightning`` (``Trainer.fit`` with no callbacks, logger or
progress bar), ``+<Callback>`` (that one callback of ``omniformer-train``'s default set, plus the CSV
logger where it logs), ``all`` (every callback and the logger). Writes
``benchmarks/results/callback_overhead.json`` (with the machine) and prints a table.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from benchmarks.experiments import Context, prepare_case
from benchmarks.machine import machine_info
from benchmarks.runners import (
    StepTimer,
    SyncCounter,
    lightning_trainer,
    train_callbacks,
    train_loggers,
    train_plain,
)
from benchmarks.workloads import build_workloads
from omniformer.files import write_json

REPO = Path(__file__).resolve().parents[1]
TOY = ["model.dim=16", "model.depth=1", "model.heads=1", "data.batch_size=1", "data.block_size=8"]
CPU = torch.device("cpu")


def lightning_cpu_per_step(case, task, keep: str, steps: int, warmup: int) -> float:
    """Process CPU seconds per timed step of ``Trainer.fit`` with the default callbacks ``keep`` names
    (``none``, ``all`` or one class name), plus the loggers with ``all`` or the learning-rate monitor."""
    timer = StepTimer(CPU, warmup, SyncCounter(CPU, False))
    with tempfile.TemporaryDirectory(prefix="omniformer-callback-cost-") as root:
        callbacks = [c for c in train_callbacks(case.cfg, root) if keep in ("all", type(c).__name__)]
        logs = keep in ("all", "LearningRateMonitor")
        trainer = lightning_trainer(
            case.cfg,
            steps=warmup + steps,
            device=CPU,
            precision="32-true",
            callbacks=[*callbacks, timer],
            loggers=train_loggers(case.cfg, root) if logs else (),
            root_dir=root,
        )
        trainer.fit(task, datamodule=case.datamodule)
    return timer.clock.cpu_seconds() / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "callback_overhead.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        bench = compose("bench")
    ctx = Context(CPU, "32-true", 1.0, build_workloads(bench.workloads))
    case, task = prepare_case(ctx, "shakespeare_char", None, TOY, 64)
    with tempfile.TemporaryDirectory() as root:
        names = [type(c).__name__ for c in train_callbacks(case.cfg, root)]
    variants = ["plain", "lightning", *(f"+{n}" for n in names), "all"]
    plain_task = case.new_task()
    costs: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants if round_ % 2 == 0 else variants[::-1]:
            if variant == "plain":
                m = train_plain(plain_task, case.batches, steps=args.steps, warmup=args.warmup, device=CPU)
                costs[variant].append(m.cpu_step)
                continue
            keep = {"lightning": "none", "all": "all"}.get(variant, variant[1:])
            costs[variant].append(lightning_cpu_per_step(case, task, keep, args.steps, args.warmup))
            print(f"round {round_ + 1}: {variant}: {1000 * costs[variant][-1]:.3f} ms CPU/step", flush=True)
    plain = statistics.median(costs["plain"])
    lightning = statistics.median(costs["lightning"])
    rows = []
    print(f"\n{'variant':24s} {'CPU ms/step':>12s} {'vs plain':>10s} {'vs lightning':>13s}")
    for variant in variants:
        cost = statistics.median(costs[variant])
        rows.append(
            {
                "variant": variant,
                "cpu_ms_per_step": round(1000 * cost, 4),
                "added_ms_vs_plain": round(1000 * (cost - plain), 4),
                "added_ms_vs_lightning": round(1000 * (cost - lightning), 4),
                "rounds_ms": [round(1000 * c, 4) for c in costs[variant]],
            }
        )
        print(
            f"{variant:24s} {1000 * cost:12.3f} {1000 * (cost - plain):+10.3f} "
            f"{1000 * (cost - lightning):+13.3f}"
        )
    write_json(
        args.out,
        {
            "what": "process CPU ms per training step on a toy LM (1×16, batch 1×8), median over rounds",
            "command": " ".join(["python -m benchmarks.callback_overhead", *(argv or sys.argv[1:])]),
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info("cpu"),
            "steps": args.steps,
            "rounds": args.rounds,
            "rows": rows,
        },
    )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

"""omniformer-train against nanoGPT's training loop, end to end, alternating in one session.

    python -m benchmarks.vs_nanogpt                          # 2 rounds × (plain, omniformer), 2000 steps
    python -m benchmarks.vs_nanogpt --steps 300 --rounds 2   # shorter
    python -m benchmarks.vs_nanogpt --steps 300 -- trainer.precision=bf16-mixed   # more overrides
    python -m benchmarks.vs_nanogpt --nanogpt-dir ~/nanoGPT --variants nanogpt omniformer nanogpt_compiled

The question of issue #20: is ``omniformer-train experiment=shakespeare_char`` — wall time including
its validations over the full validation split, the validation of the final weights and the test —
faster than nanoGPT's documented CPU configuration (char-level Tiny Shakespeare, 4×4×128, block 64,
batch 12, AdamW, eager)? Variants, run in alternating order (A B, then B A, ...) so a burst of load
lands on both alike:

* ``omniformer`` / ``omniformer_compiled``: ``omniformer.train.run`` with the preset, ``trainer.max_steps``
  and ``trainer.val_check_interval`` set (``compile=true`` for the second); in this process, or
  ``python -m omniformer.train`` in a fresh one when nanoGPT runs (both then pay interpreter start-up).
* ``plain`` / ``plain_compiled``: nanoGPT's loop in plain PyTorch (the suite's ``plain`` loop,
  :func:`benchmarks.runners.train_plain`) over *omniformer's* model (same config, same weights
  init): random windows drawn per step as nanoGPT's ``get_batch`` does, ``estimate_loss``
  (``eval_iters`` batches of each split, every ``eval_interval`` steps and at step 0), forward,
  backward, ``clip_grad_norm_``, AdamW, the same warmup/cosine schedule. The ratio to it is the
  framework's cost end to end, with the model held equal.
* ``nanogpt`` / ``nanogpt_compiled``: nanoGPT's own ``train.py`` from a checkout (``--nanogpt-dir``) with
  its README's CPU flags (``--device=cpu --compile=False --eval_iters=20 --log_interval=1
  --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=N
  --lr_decay_iters=N --dropout=0.0``), run in a scratch folder holding its ``configurator.py`` and
  ``data/shakespeare_char`` prepared from omniformer's bundled Tiny Shakespeare the way nanoGPT's
  ``prepare.py`` does (sorted characters, 90/10 split, uint16).

Every variant counts the same tokens (steps × batch × block) over its wall time. Validation loss:
omniformer's is over the full validation split; nanoGPT's and ``plain``'s are ``eval_iters``-batch
estimates (``val_loss_kind`` says which). Results: ``--out`` + ``.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "plain_compiled", "omniformer", "omniformer_compiled", "nanogpt", "nanogpt_compiled")

#: nanoGPT README's CPU run of the shakespeare_char config (minus the iteration counts).
NANOGPT_CPU_FLAGS = (
    "--device=cpu",
    "--eval_iters={eval_iters}",
    "--eval_interval={eval_interval}",
    "--log_interval=1",
    "--block_size={block_size}",
    "--batch_size={batch_size}",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters={steps}",
    "--lr_decay_iters={steps}",
    "--dropout=0.0",
    "--compile={compile}",
)


def check_variants(variants: Sequence[str], nanogpt_dir: str | None) -> None:
    """One ``ValueError`` for unknown variants, or nanoGPT variants without a checkout."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants {list(variants)}: choose from {list(VARIANTS)}")
    has_checkout = bool(nanogpt_dir) and (Path(nanogpt_dir).expanduser() / "train.py").is_file()
    if any(v.startswith("nanogpt") for v in variants) and not has_checkout:
        raise ValueError(
            f"the nanogpt variants run nanoGPT's train.py from a checkout; nanogpt_dir={nanogpt_dir!r} "
            "has none (git clone https://github.com/karpathy/nanoGPT and pass its path)"
        )


# ------------------------------------------------------------------------------------------- nanoGPT
def prepare_nanogpt_data(folder: Path) -> Path:
    """``folder/data/shakespeare_char/{train,val}.bin, meta.pkl`` as nanoGPT's ``prepare.py`` writes
    them, from omniformer's bundled Tiny Shakespeare (nanoGPT downloads the same file)."""
    from omniformer.data.text import BUNDLED_SHAKESPEARE

    out = folder / "data" / "shakespeare_char"
    if (out / "val.bin").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    text = BUNDLED_SHAKESPEARE.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = len(text)
    ids[: int(n * 0.9)].tofile(out / "train.bin")
    ids[int(n * 0.9) :].tofile(out / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    return out


_ITER = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def run_nanogpt(
    nanogpt_dir: str | Path,
    scratch: Path,
    *,
    steps: int,
    compile: bool,
    eval_interval: int,
    eval_iters: int,
    batch_size: int,
    block_size: int,
    threads: int,
) -> dict[str, Any]:
    """One run of nanoGPT's ``train.py`` in a fresh process; wall time, losses and step times."""
    nanogpt = Path(nanogpt_dir).expanduser().resolve()
    prepare_nanogpt_data(scratch)
    link = scratch / "configurator.py"  # train.py exec()s it from the working directory
    if not link.exists():
        link.symlink_to(nanogpt / "configurator.py")
    flags = [
        f.format(
            steps=steps,
            compile=compile,
            eval_interval=eval_interval,
            eval_iters=eval_iters,
            batch_size=batch_size,
            block_size=block_size,
        )
        for f in NANOGPT_CPU_FLAGS
    ]
    command = [
        sys.executable,
        str(nanogpt / "train.py"),
        str(nanogpt / "config" / "train_shakespeare_char.py"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([*command, *flags], cwd=scratch, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"nanoGPT's train.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    step_ms, val = [], None
    for line in done.stdout.splitlines():
        if m := _ITER.match(line):
            if int(m.group(1)) > 0:  # iteration 0 holds the first evaluation and warm-up
                step_ms.append(float(m.group(3)))
        elif m := _EVAL.match(line):
            val = float(m.group(3))
    return {
        "wall_seconds": wall,
        "val_loss": val,
        "val_loss_kind": f"{eval_iters}-batch estimate",
        "ms_per_step_median": statistics.median(step_ms) if step_ms else None,
        "command": " ".join([*command[1:], *flags]),
    }


# ---------------------------------------------------------------------------------------- omniformer
def omniformer_overrides(
    overrides: Sequence[str], steps: int, val_check_interval: int, compile: bool, precision: str
) -> list[str]:
    """``omniformer-train`` overrides of one run."""
    return [
        *overrides,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={val_check_interval}",
        f"trainer.precision={precision}",
        f"compile={str(compile).lower()}",
    ]


def run_omniformer(args: list[str], scratch: Path, isolate: bool) -> dict[str, Any]:
    """``omniformer.train.run(args)`` here, or ``python -m omniformer.train args`` in a fresh process."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    started = time.perf_counter()
    if isolate:
        done = subprocess.run(
            [sys.executable, "-m", "omniformer.train", *args, f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"omniformer-train failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads((run_dir / "results.json").read_text())
    else:
        from benchmarks.workloads import hydra_set_aside
        from omniformer.train import run

        with hydra_set_aside():
            results = run(args, run_dir=run_dir)
    wall = time.perf_counter() - started
    limited = any(a.startswith("trainer.limit_val_batches=") for a in args)
    return {
        "wall_seconds": wall,
        "val_loss": results.get("val_loss"),
        "val_loss_kind": "trainer.limit_val_batches" if limited else "full validation split",
        "ms_per_step_median": None,
        "fit_seconds": results.get("wall_seconds"),
    }


# --------------------------------------------------------------------------------------------- plain
def run_plain(
    cfg, *, steps: int, compile: bool, eval_interval: int, eval_iters: int, precision: str
) -> dict[str, Any]:
    """nanoGPT's training loop over omniformer's model (see the module docstring): the suite's plain
    loop (:func:`benchmarks.runners.train_plain`) fed by nanoGPT's ``get_batch``, with its
    ``estimate_loss`` every ``eval_interval`` steps and after the last."""
    from benchmarks.runners import autocast, train_plain
    from benchmarks.workloads import Workload

    started = time.perf_counter()
    built = Workload.build(cfg)
    task, datamodule = built.task, built.datamodule
    net = task.net
    if compile:
        net.backbone.compile()
    splits = {
        "train": torch.from_numpy(np.asarray(datamodule.train_ids, dtype=np.int64)),
        "val": torch.from_numpy(np.asarray(datamodule.val_ids, dtype=np.int64)),
    }
    block, batch = int(cfg.data.block_size), int(cfg.data.batch_size)
    device = torch.device("cpu")

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = splits[split]
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        return x, y

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        out = {}
        net.eval()
        for split in splits:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                with autocast(device, precision):
                    losses[k] = task.model_step(get_batch(split))[0].item()
            out[split] = losses.mean().item()
        net.train()
        return out

    val = {"val": math.nan}

    def evaluate(step: int) -> None:
        if step % eval_interval == 0:
            val.update(estimate_loss())

    # nanoGPT runs iterations 0..max_iters and evaluates at both ends; step 0 (the first evaluation
    # and warm-up) is untimed, as its log leaves iteration 0 out.
    measured = train_plain(
        task,
        iter(lambda: get_batch("train"), None),
        steps=steps - 1,
        warmup=1,
        device=device,
        precision=precision,
        clip=cfg.trainer.get("gradient_clip_val"),
        before_step=evaluate,
    )
    val.update(estimate_loss())
    return {
        "wall_seconds": time.perf_counter() - started,
        "val_loss": round(val["val"], 4),
        "val_loss_kind": f"{eval_iters}-batch estimate",
        "ms_per_step_median": 1000 * measured.median_step if measured.steps else None,
    }


# -------------------------------------------------------------------------------------------- compare
def compare(
    *,
    overrides: Sequence[str] = ("experiment=shakespeare_char",),
    variants: Sequence[str] = ("plain", "omniformer"),
    steps: int = 2000,
    rounds: int = 2,
    val_check_interval: int = 500,
    eval_interval: int = 250,
    eval_iters: int = 20,
    nanogpt_dir: str | None = None,
    isolate: bool | None = None,
    precision: str = "32-true",
) -> dict[str, list[dict[str, Any]]]:
    """Run ``variants`` in alternating rounds; rows per run (``e2e``) and paired ratios (``e2e_ratios``).

    Every row carries the model's training FLOPs per token (:func:`flops_per_token_of`), for CPU MFU.

    ``isolate``: omniformer in a fresh process (default: when nanoGPT, which always does, is run).
    """
    from benchmarks.workloads import compose_train

    check_variants(variants, nanogpt_dir)
    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds and steps must be >= 1, got {rounds} and {steps}")
    isolate = any(v.startswith("nanogpt") for v in variants) if isolate is None else isolate
    cfg = compose_train(list(overrides))
    batch, block = int(cfg.data.batch_size), int(cfg.data.block_size)
    tokens = steps * batch * block
    flops_per_token = flops_per_token_of(cfg)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vs-nanogpt-") as tmp:
        scratch = Path(tmp)
        for round_ in range(rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                compiled = variant.endswith("_compiled")
                print(f"vs_nanogpt: round {round_ + 1}/{rounds}, {variant}", file=sys.stderr, flush=True)
                if variant.startswith("nanogpt"):
                    out = run_nanogpt(
                        nanogpt_dir,
                        scratch,
                        steps=steps,
                        compile=compiled,
                        eval_interval=eval_interval,
                        eval_iters=eval_iters,
                        batch_size=batch,
                        block_size=block,
                        threads=torch.get_num_threads(),
                    )
                elif variant.startswith("plain"):
                    out = run_plain(
                        compose_train(list(overrides)),
                        steps=steps,
                        compile=compiled,
                        eval_interval=eval_interval,
                        eval_iters=eval_iters,
                        precision=precision,
                    )
                else:
                    args = omniformer_overrides(overrides, steps, val_check_interval, compiled, precision)
                    out = run_omniformer(args, scratch, isolate)
                rows.append(
                    {
                        "variant": variant,
                        "round": round_,
                        "steps": steps,
                        "batch_size": batch,
                        "seq_len": block,
                        "precision": precision,
                        "tokens_per_sec": round(tokens / out["wall_seconds"], 1),
                        "flops_per_token": flops_per_token,
                        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()},
                    }
                )
    return {"e2e": rows, "e2e_ratios": ratios(rows)}


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each omniformer variant's tokens/s over each baseline's, paired by round (> 1: omniformer faster)."""
    by: dict[str, dict[int, float]] = {}
    for row in rows:
        by.setdefault(row["variant"], {})[row["round"]] = row["tokens_per_sec"]
    out = []
    for ours in (v for v in by if v.startswith("omniformer")):
        for base in (v for v in by if not v.startswith("omniformer")):
            paired = [by[ours][r] / by[base][r] for r in sorted(by[ours]) if r in by[base]]
            if paired:
                out.append(
                    {
                        "variant": ours,
                        "baseline": base,
                        "tokens_per_sec_ratio": round(statistics.median(paired), 4),
                        "ratio_rounds": [round(p, 4) for p in paired],
                    }
                )
    return out


def render(result: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown tables of the runs and the ratios."""
    from benchmarks.report import cpu_mfu_cell

    lines = [
        "| variant | round | wall (s) | tokens/s | median ms/step | val loss | CPU MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["e2e"]:
        lines.append(
            f"| {r['variant']} | {r['round'] + 1} | {r['wall_seconds']:.1f} | {r['tokens_per_sec']:,.0f} "
            f"| {r['ms_per_step_median'] if r['ms_per_step_median'] is not None else '–'} "
            f"| {r['val_loss'] if r['val_loss'] is not None else '–'} ({r['val_loss_kind']}) "
            f"| {cpu_mfu_cell(r)} |"
        )
    lines += [
        "",
        "| omniformer variant | baseline | tokens/s ratio (median of rounds) | per round |",
        "|---|---|---|---|",
    ]
    for r in result["e2e_ratios"]:
        rounds = ", ".join(f"{x:.3f}" for x in r["ratio_rounds"])
        lines.append(f"| {r['variant']} | {r['baseline']} | **{r['tokens_per_sec_ratio']:.3f}** | {rounds} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.vs_nanogpt``: alternate the variants; write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["plain", "omniformer"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=500, help="omniformer's trainer.val_check_interval")
    parser.add_argument("--eval-interval", type=int, default=250, help="nanoGPT's eval_interval")
    parser.add_argument("--eval-iters", type=int, default=20, help="nanoGPT's eval_iters")
    parser.add_argument("--nanogpt-dir", default=None, help="a nanoGPT checkout (for the nanogpt variants)")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/vs_nanogpt", help="path stem of .json / .md")
    parser.add_argument("--experiment", default="shakespeare_char", help="omniformer-train experiment preset")
    parser.add_argument("overrides", nargs="*", help="more omniformer-train overrides (after --)")
    args = parser.parse_args(argv)
    overrides = [f"experiment={args.experiment}", *args.overrides] if args.experiment else args.overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.machine import machine_info
    from benchmarks.roof import add_cpu_mfu, measure_roof
    from omniformer.files import atomic_write_text, write_json

    result = compare(
        overrides=overrides,
        variants=args.variants,
        steps=args.steps,
        rounds=args.rounds,
        val_check_interval=args.val_every,
        eval_interval=args.eval_interval,
        eval_iters=args.eval_iters,
        nanogpt_dir=args.nanogpt_dir,
        precision=args.precision,
    )
    roof = measure_roof()
    add_cpu_mfu(result["e2e"], roof["roof"])
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_suffix(".json"), {"machine": machine_info("cpu"), "roof": roof, **result})
    atomic_write_text(stem.with_suffix(".md"), render(result))
    print(render(result))


def flops_per_token_of(cfg) -> int:
    """Training FLOPs per token of the model a composed train config builds (its data module is set up
    for the vocabulary size)."""
    from benchmarks.flops import model_flops_per_token
    from benchmarks.workloads import Workload

    net = Workload.build(cfg).task.net
    return model_flops_per_token(net, net.backbone, int(cfg.data.block_size), training=True)


if __name__ == "__main__":
    main()

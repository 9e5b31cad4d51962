"""python -m benchmarks: run a benchmark suite, write its JSON, regenerate the Markdown table.

From the repository root:

    python -m benchmarks                          # the CPU suite (conf/suite/cpu.yaml), a few minutes
    python -m benchmarks suite=smoke              # seconds; checks the machinery, publishes nothing
    python -m benchmarks suite=gpu                # on a CUDA machine (benchmarks/gpu_suite.sh runs it)
    python -m benchmarks suite=gpu dry_run=true   # the GPU suite's code path, shrunk, on the CPU
    python -m benchmarks suite.experiments.scaling=null results_dir=/tmp/bench   # drop one experiment

A suite is a device, a precision and a mapping of experiments (``kind``: overhead, throughput, sdpa,
scaling, roof, profile, nanogpt_e2e — see :mod:`benchmarks.experiments`), each over workloads registered in
``benchmarks/conf/bench.yaml``.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.experiments import CHECKS, EXPERIMENTS, Context
from benchmarks.machine import machine_info, measure_peak_flops
from benchmarks.report import SCHEMA, cpu_mfu_cell, roof_best, timestamp, write_markdown, write_result
from benchmarks.roof import add_cpu_mfu, measure_roof, merge_roofs
from benchmarks.workloads import build_workloads

log = logging.getLogger("benchmarks")

# What a dry run keeps of each experiment: a step or two of every code path.
_DRY_LIMITS = {"steps": 3, "infer_steps": 2, "warmup": 1, "rounds": 1, "repeats": 2, "val_check_interval": 2}
# A grid's batch sizes and sequence lengths override the toy sizes of dry_run_overrides: two small ones.
_DRY_GRIDS = {"batch_sizes": [1, 2], "seq_lens": [16, 32]}


def _dry(params: dict[str, Any]) -> dict[str, Any]:
    """Shrink an experiment's settings for a dry run (no compile: the CPU compiles for minutes)."""
    params = dict(params)
    for key, limit in _DRY_LIMITS.items():
        if params.get(key):
            params[key] = min(int(params[key]), limit)
    for key in ("backends", "shapes"):
        if params.get(key):
            params[key] = list(params[key])[:2]
    for key, grid in _DRY_GRIDS.items():
        if params.get(key):
            params[key] = grid
    if params.get("min_seconds"):
        params["min_seconds"] = min(float(params["min_seconds"]), 0.02)
    if params.get("compile"):
        params["compile"] = [False]
    if params.get("variants"):
        params["variants"] = list(dict.fromkeys(v.removesuffix("_compiled") for v in params["variants"]))
    if "variant" in params:
        params["variant"] = params["variant"].removesuffix("_compiled")
    return params


def _bind(name: str, kind: str, params: dict[str, Any], ctx: Context):
    """The experiment function of ``kind`` with ``params`` checked against its signature."""
    if kind not in EXPERIMENTS:
        raise ValueError(
            f"suite.experiments.{name}.kind={kind!r} is unknown; choose from {sorted(EXPERIMENTS)}"
        )
    function = EXPERIMENTS[kind]
    try:
        bound = inspect.signature(function).bind(ctx, **params)
    except TypeError as err:
        allowed = [p for p in inspect.signature(function).parameters if p != "ctx"]
        raise ValueError(f"suite.experiments.{name} ({kind}): {err}; its settings are {allowed}") from None
    if kind in CHECKS:  # with the experiment's own defaults for the settings the suite leaves out
        bound.apply_defaults()
        try:
            CHECKS[kind](**{k: v for k, v in bound.arguments.items() if k != "ctx"})
        except ValueError as err:
            raise ValueError(f"suite.experiments.{name} ({kind}): {err}") from None
    return function


def _experiments(suite: DictConfig, ctx: Context, dry_run: bool) -> list[tuple[str, str, dict, Any]]:
    """``(name, kind, settings, function)`` of every experiment, each checked before any runs; the
    roof first (every later row is rated against it; it is measured again at the end)."""
    experiments = []
    for name, node in (suite.experiments or {}).items():
        if node is None:
            continue
        params = OmegaConf.to_container(node, resolve=True)
        kind = params.pop("kind", name)
        if dry_run:
            params = _dry(params)
        experiments.append((name, kind, params, _bind(name, kind, params, ctx)))
    if not experiments:
        raise ValueError(f"suite {suite.name} has no experiments to run")
    experiments.sort(key=lambda item: item[1] != "roof")
    return experiments


def _device(suite: DictConfig, dry_run: bool) -> torch.device:
    if dry_run:
        return torch.device("cpu")
    device = torch.device(suite.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"suite={suite.name} needs a CUDA device and torch sees none; on this machine run "
            f"`python -m benchmarks suite={suite.name} dry_run=true` to check the code path on the CPU"
        )
    return device


def run_suite(cfg: DictConfig, command: str | None = None) -> Path:
    """Run the configured suite; write its result JSON and regenerate the Markdown page."""
    suite, dry_run = cfg.suite, bool(cfg.get("dry_run", False))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    device = _device(suite, dry_run)
    threads = torch.get_num_threads()
    try:
        # a dry run's toy sizes only lose from more threads on a shared CPU
        torch.set_num_threads(1 if dry_run else int(suite.get("threads") or threads))
        return _run_suite(cfg, suite, device, dry_run, command)
    finally:
        torch.set_num_threads(threads)


def _run_suite(
    cfg: DictConfig, suite: DictConfig, device: torch.device, dry_run: bool, command: str | None
) -> Path:
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
    started = time.perf_counter()
    shrink = OmegaConf.to_container(suite.get("dry_run_overrides") or {}, resolve=True) if dry_run else {}
    ctx = Context(
        device=device,
        precision=suite.precision,
        peak_flops=0.0,  # measured below, once every experiment's settings are known to be valid
        workloads=build_workloads(cfg.workloads),
        sdpa=suite.get("sdpa", "default"),
        check_syncs=bool(suite.get("check_syncs", False)) and device.type == "cuda",
        extra_overrides=shrink,
    )
    experiments = _experiments(suite, ctx, dry_run)
    peak_cfg = OmegaConf.to_container(suite.peak, resolve=True)
    if dry_run:
        peak_cfg.update(size=min(peak_cfg.get("size", 256), 256), repeats=2)
    log.info("measuring the peak: %s", peak_cfg)
    peak = measure_peak_flops(str(device), **peak_cfg)
    log.info("peak %.3f TFLOP/s", peak["flops_per_sec"] / 1e12)
    ctx.peak_flops = peak["flops_per_sec"]
    stem = f"{timestamp()}-{suite.name}{'-dry' if dry_run else ''}"
    results_dir = Path(cfg.results_dir)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "suite": str(suite.name),
        "publish": bool(suite.get("publish", True)) and not dry_run,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command or " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "wall_seconds": 0.0,
        "machine": machine_info(str(device)),
        "peak": peak,
        "settings": {
            "device": str(device),
            "precision": ctx.precision,
            "sdpa": ctx.sdpa,
            "dry_run": dry_run,
            "check_syncs": ctx.check_syncs,
        },
        "runs": [],
        "overhead": [],
        "skipped": [],
        "plots": [],
        "notes": list(suite.get("notes") or []),
    }
    for index, (name, kind, params, function) in enumerate(experiments):
        log.info("== experiment %s (%s), %d of %d", name, kind, index + 1, len(experiments))
        try:
            out = function(ctx, **params)
        except FileNotFoundError as err:  # a dataset that is not on this machine: say so, go on
            log.warning("experiment %s skipped: %s", name, err)
            result["skipped"].append({"experiment": name, "reason": str(err)})
            continue
        for row in out.get("runs", []):
            row["experiment"] = name
        result["runs"] += out.get("runs", [])
        result["overhead"] += [{**row, "experiment": name} for row in out.get("overhead", [])]
        result["skipped"] += [{**row, "experiment": name} for row in out.get("skipped", [])]
        if "roof" in out:
            result["roof"] = {**out["roof"], "experiment": name}
        for key in ("profile", "e2e", "e2e_ratios"):
            if key in out:
                result.setdefault(key, []).extend({**row, "experiment": name} for row in out[key])
        if kind == "scaling" and out.get("runs"):
            from omniformer.viz.curves import plot_scaling

            plot = plot_scaling(
                out["runs"],
                results_dir / f"{stem}-{name}.png",
                f"{name}: {out['runs'][0]['workload']} (suite {suite.name}, {device.type}, plain loop)",
            )
            result["plots"].append(plot.name)
        # Written after every experiment: a run stopped by a time limit keeps what it measured.
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = False
        _publish(cfg, result, results_dir, stem)
    # The peak again at the end: on a shared machine the first measurement may have met a burst of
    # load; MFU is against the best rate seen in this run.
    again = measure_peak_flops(str(device), **peak_cfg)
    log.info("peak again at the end: %.3f TFLOP/s", again["flops_per_sec"] / 1e12)
    peak["flops_per_sec_end"] = again["flops_per_sec"]
    if again["flops_per_sec"] > peak["flops_per_sec"]:
        peak["flops_per_sec"] = again["flops_per_sec"]
        for run in result["runs"]:
            run["mfu"] = round(run["achieved_tflops"] * 1e12 / peak["flops_per_sec"], 4)
    if "roof" in result:  # likewise the roof: the better of the start's and the end's rate per shape
        first = result["roof"]
        merged = merge_roofs(first, measure_roof(**first["settings"]))
        result["roof"] = {**merged, "settings": first["settings"], "experiment": first["experiment"]}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["complete"] = True
    path = _publish(cfg, result, results_dir, stem)
    print_summary(result)
    return path


def _publish(cfg: DictConfig, result: dict[str, Any], results_dir: Path, stem: str) -> Path:
    """Write the result JSON, regenerate the Markdown page, copy both (and plots) to ``copy_to``."""
    if "roof" in result:  # CPU MFU of every row against the roof of its precision
        add_cpu_mfu(result["runs"], result["roof"]["roof"])
        add_cpu_mfu(result.get("e2e", []), result["roof"]["roof"])
    path = write_result(result, results_dir, stem)
    markdown = write_markdown(results_dir, cfg.markdown)
    log.info("results: %s (table: %s)", path, markdown)
    copy_to = cfg.get("copy_to")
    if copy_to:
        target = Path(copy_to)
        target.mkdir(parents=True, exist_ok=True)
        for file in [path, markdown, *(results_dir / p for p in result["plots"])]:
            shutil.copy2(file, target / file.name)
    return path


def print_summary(result: dict[str, Any]) -> None:
    """The headline figures as tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"benchmarks {result['suite']} ({result['settings']['device']})")
    for column in (
        "experiment",
        "workload",
        "model",
        "variant",
        "mode",
        "tokens/s",
        "ms/step",
        "MFU",
        "GFLOP/s",
        "CPU MFU",
        "peak MiB",
    ):
        table.add_column(column)
    for run in result["runs"]:
        table.add_row(
            run["experiment"],
            run["workload"],
            run["model"],
            run["variant"] + (f" [{run['sdpa']}]" if run["experiment"] == "sdpa" else ""),
            run["mode"],
            f"{run['tokens_per_sec']:,.0f}",
            f"{run['ms_per_step']:.2f}",
            f"{100 * run['mfu']:.1f}%",
            f"{run['model_gflops_per_sec']:.1f}" if run.get("model_gflops_per_sec") is not None else "–",
            cpu_mfu_cell(run),
            f"{run['peak_mem_mib']:.0f}",
        )
    console.print(table)
    if "roof" in result:
        console.print(f"CPU roof ({result['roof']['threads']} threads): {roof_best(result['roof'])}")
    if result.get("profile"):
        from benchmarks.profile_run import render

        print(render(result["profile"], title="where the time goes (kind: profile)"))
    if result.get("e2e"):
        from benchmarks.vs_nanogpt import render

        print(render(result))
    if result["overhead"]:
        ratios = Table(title="side-by-side step-time ratios (paired by round; all steps: mean, median)")
        for column in ("workload", "comparison", "variant", "baseline", "paired", "mean", "median"):
            ratios.add_column(column)
        for row in result["overhead"]:
            ratios.add_row(
                row["workload"],
                row["kind"],
                row["variant"],
                row["baseline"],
                f"{row['ratio_paired']:.3f}",
                f"{row['ratio']:.3f}",
                f"{row['ratio_median']:.3f}",
            )
        console.print(ratios)


@hydra.main(config_path="conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m benchmarks`` (Hydra overrides on the command line)."""
    run_suite(cfg)

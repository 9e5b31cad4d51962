"""The suite's experiments: overhead, throughput, SDPA backends and batch/sequence scaling.

Each experiment builds its cases from :class:`~benchmarks.workloads.Workload` s, times them with
:mod:`benchmarks.runners` and returns result records (plain dicts, see
:mod:`benchmarks.report` for the schema). Speed claims are ratios measured side by side in
one process: variants run in interleaved rounds (A B C, then C B A, ...) so a burst of load from
another process lands on every variant alike instead of on whichever ran at that moment.
"""

from __future__ import annotations

import gc
import inspect
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from benchmarks.flops import counted_flops, matmul_parameters, mfu, model_flops_per_token
from benchmarks.roof import check_roof_settings, measure_roof
from benchmarks.runners import (
    LoaderBatches,
    Measurement,
    infer,
    sdpa_backend,
    train_lightning,
    train_plain,
)
from benchmarks.workloads import Workload, batch_shape, prefetch_batches

log = logging.getLogger("benchmarks")

LOOPS = ("plain", "plain_loader", "lightning", "lightning_default")


@dataclass
class Context:
    """What every experiment of a suite shares.

    Args:
        device: where the runs execute.
        precision: ``32-true`` or ``bf16-mixed`` (Lightning's names; the plain loop autocasts alike).
        peak_flops: measured matmul peak (FLOP/s) MFU is computed against.
        workloads: the registry of ``bench.yaml``.
        sdpa: attention kernel for every run unless an experiment varies it.
        check_syncs: count host synchronisations in timed GPU steps.
        extra_overrides: workload name (or ``*`` for all) → overrides appended to its cases (the dry
            run shrinks models with them).
    """

    device: torch.device
    precision: str
    peak_flops: float
    workloads: dict[str, Workload]
    sdpa: str = "default"
    check_syncs: bool = False
    extra_overrides: dict[str, list[str]] = field(default_factory=dict)

    def workload(self, name: str) -> Workload:
        """The registered workload ``name`` (a clear error listing the known ones otherwise)."""
        if name not in self.workloads:
            raise KeyError(f"unknown workload {name!r}; bench.yaml registers {sorted(self.workloads)}")
        return self.workloads[name]

    def extra_for(self, workload: str) -> list[str]:
        """The extra overrides for ``workload``'s cases."""
        return [*self.extra_overrides.get("*", []), *self.extra_overrides.get(workload, [])]


def parse_variant(name: str) -> tuple[str, bool]:
    """``lightning_compiled`` → ``("lightning", True)``; loops are plain, lightning, lightning_default."""
    loop, compiled = (name[: -len("_compiled")], True) if name.endswith("_compiled") else (name, False)
    if loop not in LOOPS:
        choices = [*LOOPS, *(f"{loop}_compiled" for loop in LOOPS)]
        raise ValueError(f"variant {name!r} is unknown; choose from {choices}")
    return loop, compiled


@dataclass
class Case:
    """One workload at one size: config, data, batches and the model-derived figures."""

    workload: Workload
    model: str
    cfg: Any
    datamodule: L.LightningDataModule
    batches: list
    samples: int
    seq_len: int
    params: int
    flops_train: int
    flops_infer: int
    flops_counted: int | None = None

    def new_task(self) -> L.LightningModule:
        """A freshly initialised task (seeded: every variant starts from the same weights)."""
        from hydra.utils import instantiate

        L.seed_everything(self.cfg.seed, verbose=False)
        return instantiate(self.cfg.task)


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return type(batch)(_to(item, device) for item in batch)


def _first_sample(batch):
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    return type(batch)(_first_sample(item) for item in batch)


def prepare_case(
    ctx: Context,
    workload: str,
    model: str | None,
    overrides: Sequence[str],
    batches: int,
    count_flops: bool = False,
    grid: Sequence[str] = (),
    task: L.LightningModule | None = None,
) -> tuple[Case, L.LightningModule]:
    """Compose, build and measure the shapes of a case; return it and its first task.

    Overrides apply in the order: the case's, the context's (dry-run shrinking), then ``grid``
    (the sizes a scaling experiment sweeps, which must win). With ``task`` given, only the data
    module is built (the model does not depend on batch size or sequence length).
    """
    wl = ctx.workload(workload)
    cfg = wl.config(model, [*overrides, *ctx.extra_for(workload), *grid])
    if task is None:
        built = wl.build(cfg)
        datamodule, task = built.datamodule, built.task
    else:
        datamodule = wl.build_data(cfg)
    data = prefetch_batches(datamodule, batches)
    first = _to(_first_sample(data[0]), next(task.parameters()).device)
    _, seq_len = batch_shape(task, first)
    samples = int(data[0][-1].shape[0]) if isinstance(data[0], (tuple, list)) else int(data[0].shape[0])
    net, backbone = task.net, task.net.backbone
    counted = None
    if count_flops:  # one sample is enough (FLOPs per token do not depend on the batch size)
        net.to(ctx.device)
        one = _to(_first_sample(data[0]), ctx.device)
        counted = counted_flops(lambda: task.model_step(one)[0].backward()) // seq_len
        net.zero_grad(set_to_none=True)
    case = Case(
        workload=wl,
        model=model or wl.model or f"{backbone.depth}x{backbone.heads}x{backbone.dim}",
        cfg=cfg,
        datamodule=datamodule,
        batches=data,
        samples=samples,
        seq_len=seq_len,
        params=sum(p.numel() for p in net.parameters()),
        flops_train=model_flops_per_token(net, backbone, seq_len, training=True),
        flops_infer=model_flops_per_token(net, backbone, seq_len, training=False),
        flops_counted=counted,
    )
    log.info(
        "case %s/%s: %d samples × %d tokens per batch, %.2fM parameters (%.2fM in matmuls)",
        wl.name,
        case.model,
        samples,
        seq_len,
        case.params / 1e6,
        matmul_parameters(net) / 1e6,
    )
    return case, task


def _ready(task: L.LightningModule, loop: str, compiled: bool, device: torch.device) -> L.LightningModule:
    if loop.startswith("plain"):
        task.net.to(device)
    if compiled:
        task.net.backbone.compile()  # in place, as omniformer-train's compile=true does
    return task


def _run(
    ctx: Context, case: Case, task: L.LightningModule, loop: str, mode: str, steps: int, warmup: int
) -> Measurement:
    if mode == "infer":
        task.net.to(ctx.device)
        return infer(
            task,
            case.batches,
            steps=steps,
            warmup=warmup,
            device=ctx.device,
            precision=ctx.precision,
        )
    if loop.startswith("plain"):
        return train_plain(
            task,
            case.batches if loop == "plain" else LoaderBatches(case.datamodule),
            steps=steps,
            warmup=warmup,
            device=ctx.device,
            precision=ctx.precision,
            clip=case.cfg.trainer.get("gradient_clip_val"),
            check_syncs=ctx.check_syncs,
        )
    return train_lightning(
        case.cfg,
        task,
        case.datamodule,
        steps=steps,
        warmup=warmup,
        device=ctx.device,
        precision=ctx.precision,
        default_callbacks=loop == "lightning_default",
        check_syncs=ctx.check_syncs,
    )


def make_record(
    ctx: Context,
    case: Case,
    m: Measurement,
    *,
    experiment: str,
    variant: str,
    mode: str,
    compiled: bool,
    sdpa: str | None = None,
) -> dict[str, Any]:
    """One result row: throughput, step-time breakdown, memory, FLOPs and MFU of a measurement."""
    step = m.mean_step
    tokens = case.samples * case.seq_len
    tokens_per_sec = tokens / step if step > 0 else 0.0
    flops = case.flops_train if mode == "train" else case.flops_infer
    return {
        "experiment": experiment,
        "workload": case.workload.name,
        "unit": case.workload.unit,
        "model": case.model,
        "variant": variant,
        "mode": mode,
        "compiled": compiled,
        "precision": ctx.precision,
        "sdpa": sdpa or ctx.sdpa,
        "batch_size": case.samples,
        "seq_len": case.seq_len,
        "params": case.params,
        "steps": m.steps,
        "tokens_per_sec": round(tokens_per_sec, 2),
        "samples_per_sec": round(case.samples / step, 3) if step > 0 else 0.0,
        "ms_per_step": round(1000 * step, 3),
        "ms_per_step_median": round(1000 * m.median_step, 3),
        "data_ms_per_step": round(1000 * m.data_seconds / max(m.steps, 1), 3),
        "compute_ms_per_step": round(1000 * (m.wall_seconds - m.data_seconds) / max(m.steps, 1), 3),
        "data_wait_fraction": round(m.data_fraction, 4),
        "peak_mem_mib": round(m.peak_mem_mib, 1),
        "mem_kind": m.mem_kind,
        "flops_per_token": flops,
        "flops_per_token_counted": case.flops_counted if mode == "train" else None,
        "achieved_tflops": round(flops * tokens_per_sec / 1e12, 7),
        "mfu": round(mfu(flops, tokens_per_sec, ctx.peak_flops), 4),
        "host_syncs_per_step": None if m.host_syncs is None else round(m.host_syncs / max(m.steps, 1), 3),
        "cpu_ms_per_step": None if m.cpu_step is None else round(1000 * m.cpu_step, 3),
    }


def _collect() -> None:
    """Return freed memory (between cases, so one case's peak is not the previous case's)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def overhead(
    ctx: Context,
    workload: str,
    model: str | None = None,
    overrides: Sequence[str] = (),
    variants: Sequence[str] = ("plain", "lightning", "lightning_default"),
    steps: int = 100,
    warmup: int = 10,
    rounds: int = 2,
    infer_steps: int = 0,
) -> dict[str, list]:
    """The same model and batches through a plain loop and through omniformer's Lightning path.

    Every variant gets its own identically initialised task; after one untimed warm-up round,
    variants run in interleaved rounds of ``steps`` timed steps each. Returns ``runs`` (one per
    variant, rounds merged) and ``overhead`` rows: each variant's step time over its plain-loop
    counterpart's (same compile setting; ``loop_overhead`` against ``plain_loader``, which pulls
    batches through the data module's own loader), and compiled-over-eager speed-ups.
    """
    parsed = {name: parse_variant(name) for name in variants}
    case, first = prepare_case(ctx, workload, model, overrides, warmup + steps, count_flops=True)
    tasks, results = {}, {}
    for index, name in enumerate(variants):
        loop, compiled = parsed[name]
        task = first if index == 0 else case.new_task()
        tasks[name] = _ready(task, loop, compiled, ctx.device)
    # An untimed round first: compilation, allocator growth and first-touch page faults land here,
    # not on whichever variant happens to run first in round 1.
    for name in variants:
        log.info("overhead %s: untimed warm-up round, %s", case.workload.name, name)
        with sdpa_backend(ctx.sdpa):
            _run(ctx, case, tasks[name], parsed[name][0], "train", 2, warmup)
    per_round: dict[str, list[float]] = {}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            loop, compiled = parsed[name]
            log.info("overhead %s: round %d/%d, %s", case.workload.name, round_ + 1, rounds, name)
            with sdpa_backend(ctx.sdpa):
                m = _run(ctx, case, tasks[name], loop, "train", steps, warmup)
            results[name] = results[name].merge(m) if name in results else m
            per_round.setdefault(name, []).append(m.mean_step)
            log.info("  %s: %.2f ms/step (median %.2f)", name, 1000 * m.mean_step, 1000 * m.median_step)
    runs = [
        make_record(ctx, case, results[name], experiment="overhead", variant=name, mode="train", compiled=c)
        for name, (_, c) in parsed.items()
    ]
    if infer_steps:
        with sdpa_backend(ctx.sdpa):
            m = _run(ctx, case, tasks[variants[0]], "plain", "infer", infer_steps, warmup)
        runs.append(
            make_record(
                ctx,
                case,
                m,
                experiment="overhead",
                variant=variants[0],
                mode="infer",
                compiled=parsed[variants[0]][1],
            )
        )
    rows = []
    for name, (loop, compiled) in parsed.items():
        baseline = "plain_compiled" if compiled else "plain"
        if name != baseline and baseline in results:
            rows.append(_ratio_row(case, "overhead", name, baseline, results, per_round, name, baseline))
        # With plain_loader present: the Lightning loop alone, the data pipeline on both sides.
        loader_baseline = "plain_loader_compiled" if compiled else "plain_loader"
        if loop.startswith("lightning") and loader_baseline in results:
            rows.append(
                _ratio_row(
                    case, "loop_overhead", name, loader_baseline, results, per_round, name, loader_baseline
                )
            )
        if compiled and loop in results:
            # eager over compiled step time: > 1 means compiling pays
            rows.append(_ratio_row(case, "compile_speedup", name, loop, results, per_round, loop, name))
    del tasks, first
    _collect()
    return {"runs": runs, "overhead": rows}


def _ratio_row(
    case: Case,
    kind: str,
    variant: str,
    baseline: str,
    results: dict[str, Measurement],
    per_round: dict[str, list[float]],
    numerator: str,
    denominator: str,
) -> dict:
    """Step time of ``numerator`` over ``denominator``: by mean, by median, and paired by round.

    ``ratio_paired`` is the median over rounds of the two variants' mean step times in the same
    round (neighbours in time, so slow drifts of the machine's load cancel); it is the headline.
    """
    a, b = results[numerator], results[denominator]
    paired = [x / y for x, y in zip(per_round[numerator], per_round[denominator])]
    return {
        "kind": kind,
        "workload": case.workload.name,
        "model": case.model,
        "variant": variant,
        "baseline": baseline,
        "ratio": round(a.mean_step / b.mean_step, 4),
        "ratio_median": round(a.median_step / b.median_step, 4),
        "ratio_paired": round(statistics.median(paired), 4),
        "ratio_rounds": [round(r, 4) for r in paired],
        # process CPU time per step (training process only; loader workers are not counted)
        "ratio_cpu": None if a.cpu_step is None or not b.cpu_step else round(a.cpu_step / b.cpu_step, 4),
        "steps": min(a.steps, b.steps),
    }


def throughput(
    ctx: Context,
    cases: Sequence[dict],
    variant: str = "lightning",
    steps: int = 30,
    warmup: int = 5,
    infer_steps: int = 20,
    count_flops: bool = True,
) -> dict[str, list]:
    """Training (through ``variant``) and inference throughput of each ``{workload, model, overrides}``."""
    loop, compiled = parse_variant(variant)
    runs = []
    for spec in cases:
        spec = dict(spec)
        unknown = set(spec) - {"workload", "model", "overrides"}
        if unknown or "workload" not in spec:
            raise ValueError(f"throughput case {spec}: needs 'workload', may have 'model' and 'overrides'")
        case, task = prepare_case(
            ctx,
            spec["workload"],
            spec.get("model"),
            spec.get("overrides") or [],
            warmup + max(steps, infer_steps),
            count_flops=count_flops,
        )
        task = _ready(task, loop, compiled, ctx.device)
        log.info("throughput %s/%s: training (%s)", case.workload.name, case.model, variant)
        with sdpa_backend(ctx.sdpa):
            m = _run(ctx, case, task, loop, "train", steps, warmup)
            runs.append(
                make_record(
                    ctx, case, m, experiment="throughput", variant=variant, mode="train", compiled=compiled
                )
            )
            if infer_steps:
                log.info("throughput %s/%s: inference", case.workload.name, case.model)
                m = _run(ctx, case, task, loop, "infer", infer_steps, warmup)
                runs.append(
                    make_record(
                        ctx,
                        case,
                        m,
                        experiment="throughput",
                        variant=variant,
                        mode="infer",
                        compiled=compiled,
                    )
                )
        del task, case
        _collect()
    return {"runs": runs}


def sdpa(
    ctx: Context,
    workload: str,
    model: str | None = None,
    overrides: Sequence[str] = (),
    backends: Sequence[str] = ("math", "flash"),
    modes: Sequence[str] = ("train", "infer"),
    steps: int = 10,
    warmup: int = 3,
) -> dict[str, list]:
    """The same model through each attention kernel (plain loop, so only the kernel changes)."""
    case, task = prepare_case(ctx, workload, model, overrides, warmup + steps)
    task = _ready(task, "plain", False, ctx.device)
    runs, skipped = [], []
    for backend in backends:
        for mode in modes:
            log.info("sdpa %s/%s: %s %s", case.workload.name, case.model, backend, mode)
            try:
                with sdpa_backend(backend):
                    m = _run(ctx, case, task, "plain", mode, steps, warmup)
            except RuntimeError as err:  # the kernel does not support this device / dtype / shape
                reason = str(err).strip().splitlines()[0][:200]
                log.info("  %s unavailable: %s", backend, reason)
                skipped.append(
                    {"workload": case.workload.name, "sdpa": backend, "mode": mode, "reason": reason}
                )
                continue
            runs.append(
                make_record(
                    ctx, case, m, experiment="sdpa", variant="plain", mode=mode, compiled=False, sdpa=backend
                )
            )
    del task, case
    _collect()
    return {"runs": runs, "skipped": skipped}


def scaling(
    ctx: Context,
    workload: str,
    model: str | None = None,
    overrides: Sequence[str] = (),
    batch_sizes: Sequence[int] = (4, 8, 16),
    seq_lens: Sequence[int] | None = (64, 128, 256),
    steps: int = 5,
    warmup: int = 2,
    batch_key: str = "data.batch_size",
    seq_key: str = "data.block_size",
) -> dict[str, list]:
    """Training step time over a grid of batch sizes × sequence lengths (plain loop: the model's cost).

    ``seq_lens: null`` varies the batch only (workloads whose sequence length is fixed by the data,
    e.g. images). The model is built once; only the data module changes.
    """
    runs, task = [], None
    for seq in seq_lens or [None]:
        for batch in batch_sizes:
            extra = [f"{batch_key}={batch}"] + ([f"{seq_key}={seq}"] if seq is not None else [])
            case, task = prepare_case(ctx, workload, model, overrides, warmup + steps, grid=extra, task=task)
            task = _ready(task, "plain", False, ctx.device)
            log.info("scaling %s: batch %d × %d tokens", case.workload.name, case.samples, case.seq_len)
            with sdpa_backend(ctx.sdpa):
                m = _run(ctx, case, task, "plain", "train", steps, warmup)
            runs.append(
                make_record(ctx, case, m, experiment="scaling", variant="plain", mode="train", compiled=False)
            )
    del task
    _collect()
    return {"runs": runs}


def roof(ctx: Context, **settings: Any) -> dict[str, Any]:
    """The CPU roof: best sustained matmul FLOP/s per dtype over ``[M, K, N]`` shapes, with the
    suite's thread count. Its settings and their defaults are :func:`benchmarks.roof.measure_roof`'s
    (the signature below is that one's, so the suite checks them before anything runs). The suite
    measures it first and again at the end, and rates every run row against it (``cpu_mfu``)."""
    if ctx.device.type != "cpu":
        raise ValueError(f"kind: roof measures the CPU; this suite runs on {ctx.device}")
    bound = inspect.signature(measure_roof).bind(**settings)
    bound.apply_defaults()
    settings = {**bound.arguments, "dtypes": list(bound.arguments["dtypes"])}
    settings["shapes"] = [list(shape) for shape in settings["shapes"]]
    measured = measure_roof(**settings)
    for dtype, flops in measured["roof"].items():
        log.info("roof %s: %.1f GFLOP/s (%s, %d threads)", dtype, flops / 1e9, measured["best_shape"][dtype],
                 measured["threads"])  # fmt: skip
    return {"roof": {**measured, "settings": settings}}


_CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)
roof.__signature__ = inspect.Signature([_CTX, *inspect.signature(measure_roof).parameters.values()])


def profile(
    ctx: Context,
    workload: str = "shakespeare_char",
    overrides: Sequence[str] = (),
    steps: int = 300,
    val_check_interval: int | None = 150,
    compile: Sequence[bool] = (False,),
    trace_steps: int = 0,
) -> dict[str, Any]:
    """Where the time of a real ``omniformer-train`` run goes, per bucket (data, forward, backward,
    optimizer, callbacks, checkpointing, logging, validation, ...), eager and/or compiled
    (:func:`benchmarks.profile_run.profile_train`)."""
    from benchmarks.profile_run import profile_train

    wl = ctx.workload(workload)
    if wl.data is not None:
        raise ValueError(
            f"kind: profile runs omniformer-train, which cannot build workload {workload}'s data node"
        )
    args = [*wl.overrides, *overrides, f"trainer.precision={ctx.precision}", *ctx.extra_for(workload)]
    reports = []
    for compiled in compile:
        log.info("profile %s, compile=%s, %d steps", " ".join(args), compiled, steps)
        reports.append(
            profile_train(
                args,
                steps=steps,
                val_check_interval=val_check_interval,
                compile=bool(compiled),
                trace_steps=trace_steps,
            )
        )
    return {"profile": reports}


def nanogpt_e2e(
    ctx: Context,
    workload: str = "shakespeare_char",
    overrides: Sequence[str] = (),
    variants: Sequence[str] = ("plain", "omniformer"),
    steps: int = 2000,
    rounds: int = 2,
    val_check_interval: int = 500,
    eval_interval: int = 250,
    eval_iters: int = 20,
    nanogpt_dir: str | None = None,
    isolate: bool | None = None,
) -> dict[str, Any]:
    """omniformer-train end to end (validations included) against nanoGPT's loop, alternating;
    tokens/s ratios (:func:`benchmarks.vs_nanogpt.compare`)."""
    from benchmarks.vs_nanogpt import compare

    if ctx.device.type != "cpu":
        raise ValueError(f"kind: nanogpt_e2e compares CPU runs; this suite runs on {ctx.device}")
    args = [*ctx.workload(workload).overrides, *overrides, *ctx.extra_for(workload)]
    return compare(
        overrides=args,
        variants=variants,
        steps=steps,
        rounds=rounds,
        val_check_interval=val_check_interval,
        eval_interval=eval_interval,
        eval_iters=eval_iters,
        nanogpt_dir=nanogpt_dir,
        isolate=isolate,
        precision=ctx.precision,
    )


def _check_roof(dtypes, shapes, repeats, **_) -> None:
    check_roof_settings(list(dtypes), [list(s) for s in shapes], int(repeats))


def _check_nanogpt(variants, nanogpt_dir, **_) -> None:
    from benchmarks.vs_nanogpt import check_variants

    check_variants(list(variants), nanogpt_dir)


EXPERIMENTS = {
    "overhead": overhead,
    "throughput": throughput,
    "sdpa": sdpa,
    "scaling": scaling,
    "roof": roof,
    "profile": profile,
    "nanogpt_e2e": nanogpt_e2e,
}

#: Settings checked before a suite runs anything (a typo fails in a second, not after minutes); each
#: check gets every setting of its experiment, the defaults of its signature filled in.
CHECKS = {"roof": _check_roof, "nanogpt_e2e": _check_nanogpt}

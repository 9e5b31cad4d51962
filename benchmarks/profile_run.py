"""Where the time of a real training run goes: omniformer-train, end to end, split into buckets.

    python -m benchmarks.profile_run                              # experiment=shakespeare_char, 300 steps
    python -m benchmarks.profile_run --steps 2000 --val-every 500 # the preset's full run
    python -m benchmarks.profile_run --compile both               # eager, then compile=true
    python -m benchmarks.profile_run --trace-steps 20             # + torch.profiler's ops, Chrome trace
    python -m benchmarks.profile_run --out /tmp/prof -- model=small  # more omniformer-train overrides

The run is ``omniformer.train.run`` — the function ``omniformer-train`` calls — with its configured
callbacks, loggers, checkpoints, the validations during fit, the validation of the final weights and
the test after fit. Only ``trainer.profiler`` is added (:class:`BucketProfiler`, a Lightning
``Profiler``): Lightning calls it around every hook, the batch fetch and each training batch, and it
charges each range's *exclusive* time (its own time minus the ranges nested in it) to a bucket:

=================  ==========================================================================
``setup``          before the fit (config, data and tokenizer, model, Trainer) and the fit's
                   set-up / tear-down hooks
``data``           fetching the next training batch and moving it to the device
``forward``        ``training_step``: forward pass and loss
``backward``       ``loss.backward()``
``optimizer``      optimizer step, gradient clipping, ``zero_grad``, learning-rate schedule
``callbacks``      callback and LightningModule hooks during training (progress bar, throughput,
                   per-step seeding, non-finite guard, learning-rate monitor, ...)
``checkpointing``  saving checkpoints (and the checkpoint callback's hooks)
``logging``        ``self.log`` calls, Lightning's metric bookkeeping, the loggers' writes
``validation``     every validation during the fit (the whole evaluation loop)
``fit_end``        the end-of-fit hooks (``on_train_end``, ``on_fit_end``: the LM's text sample)
``final_eval``     after the fit: validation of the final weights, the test, ``results.json``
``loop``           Lightning's training loop between the hooks it profiles
``other``          wall time no range covers (the rest of ``Trainer.fit``'s own code)
=================  ==========================================================================

While a ``torch.profiler`` records (``--trace-steps``), each range is also a
``torch.profiler.record_function`` named ``omniformer/<bucket>``, so the op table and the Chrome trace
show the buckets. With ``compile=true`` the result lists what ``torch.compile`` did: frames compiled,
recompilations and their reasons, graph breaks, compile seconds (``torch._dynamo.utils``).

Results: ``--out`` + ``.json`` and ``.md`` (default ``benchmarks/results/profile_run``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.profilers import Profiler

BUCKETS = (
    "setup",
    "data",
    "forward",
    "backward",
    "optimizer",
    "callbacks",
    "checkpointing",
    "logging",
    "validation",
    "fit_end",
    "final_eval",
    "loop",
    "other",
)

_SETUP_HOOKS = {
    "prepare_data",
    "setup",
    "configure_model",
    "configure_sharded_model",
    "configure_optimizers",
    "configure_callbacks",
    "on_fit_start",
    "on_train_start",
    "teardown",
    "on_load_checkpoint",
    "on_train_epoch_start",
    "on_train_epoch_end",
}
_OPTIMIZER_HOOKS = {
    "optimizer_step",
    "optimizer_zero_grad",
    "on_before_zero_grad",
    "configure_gradient_clipping",
    "clip_gradients",
    "lr_scheduler_step",
}
_DATA_HOOKS = {
    "batch_to_device",
    "transfer_batch_to_device",
    "on_before_batch_transfer",
    "on_after_batch_transfer",
}

#: profile_train's runs in this process, by key (the profiler is built by Hydra from the config),
#: and the torch profiler each one steps (when tracing).
_LIVE: dict[str, BucketProfiler] = {}
_TRACES: dict[str, Any] = {}
_TRACE_EXPORT: list[float] = []  # seconds the torch profiler spent on its results inside a step


def classify(name: str) -> str:
    """The bucket of a Lightning profiler action during training (outside evaluation loops)."""
    if name == "save_checkpoint" or ("Checkpoint" in name and name.startswith("[Callback]")):
        return "checkpointing"
    if name.endswith(".on_save_checkpoint"):
        return "checkpointing"
    if name.startswith("[Logging]"):
        return "logging"
    if name in ("run_training_epoch", "run_training_batch"):
        return "loop"
    if name.endswith("train_dataloader_next"):
        return "data"
    hook = name.rsplit(".", 1)[-1]
    if hook in ("on_train_end", "on_fit_end"):
        return "fit_end"
    if hook in _DATA_HOOKS:
        return "data"
    if hook == "training_step":
        return "forward"
    if hook == "backward":
        return "backward"
    if hook in _OPTIMIZER_HOOKS:
        return "optimizer"
    if hook in _SETUP_HOOKS:
        return "setup"
    return "callbacks"


class _Frame:
    __slots__ = ("bucket", "children", "name", "record", "start")

    def __init__(self, name: str, bucket: str, start: float) -> None:
        self.name, self.bucket, self.start, self.children = name, bucket, start, 0.0
        self.record: contextlib.AbstractContextManager | None = None


class BucketProfiler(Profiler):
    """A Lightning profiler that charges every profiled range's exclusive time to a bucket.

    Besides the ranges Lightning opens itself (hooks, batch fetch, training batch, checkpoint save),
    it opens ranges around the evaluation loops (a validation is charged whole to ``validation``),
    ``LightningModule.log``/``log_dict``, Lightning's metric bookkeeping and the loggers' methods
    (``logging``). Stages after the fit (the final validation and test) go to ``final_eval``.

    Args:
        key: registers the instance under this key (:func:`profile_train` finds it there).

    While a torch profiler records, every range is also a ``torch.profiler.record_function``.
    """

    def __init__(self, key: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.seconds: dict[str, float] = defaultdict(float)
        self.actions: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # count, exclusive seconds
        self.step_ends: list[float] = []
        self.validations: list[float] = []
        self.first_stage_start: float | None = None  # the fit's set-up: everything before is `setup`
        self.torch_profiler = _TRACES.get(key) if key is not None else None
        self._stack: list[_Frame] = []
        self._gap_from: float | None = None
        self._fit_done = False
        self._wrapped: set[int] = set()
        if key is not None:
            _LIVE[key] = self

    # -- timeline ------------------------------------------------------------------------------------
    def start(self, action_name: str) -> None:
        now = time.perf_counter()
        self._close_gap(now)
        if self._fit_done:
            bucket = "final_eval"
        elif self._stack and self._stack[-1].bucket == "validation":
            bucket = "checkpointing" if classify(action_name) == "checkpointing" else "validation"
        elif action_name.startswith("[Eval]"):
            bucket = "validation"
        else:
            bucket = classify(action_name)
        frame = _Frame(action_name, bucket, now)
        if torch.autograd._profiler_enabled():
            frame.record = torch.profiler.record_function(f"omniformer/{bucket}")
            frame.record.__enter__()
        self._stack.append(frame)

    def stop(self, action_name: str) -> None:
        now = time.perf_counter()
        # Lightning nests its ranges; if one was left open (an exception inside it), close it here.
        while self._stack:
            frame = self._stack.pop()
            self._close(frame, now)
            if frame.name == action_name:
                break
        if not self._stack:
            self._gap_from = now
        if action_name == "run_training_batch" and not self._fit_done:
            self.step_ends.append(now)
            if self.torch_profiler is not None:
                self.torch_profiler.step()

    def _close(self, frame: _Frame, now: float) -> None:
        if frame.record is not None:
            frame.record.__exit__(None, None, None)
        duration = now - frame.start
        exclusive = max(duration - frame.children, 0.0)
        self.seconds[frame.bucket] += exclusive
        entry = self.actions[frame.name]
        entry[0] += 1
        entry[1] += exclusive
        if self._stack:
            self._stack[-1].children += duration
        if frame.name.startswith("[Eval]") and not self._fit_done:
            self.validations.append(duration)

    def _close_gap(self, now: float) -> None:
        """Time outside every range: ``other`` during the fit, ``final_eval`` after it."""
        if self._gap_from is not None and not self._stack:
            self.seconds["final_eval" if self._fit_done else "other"] += now - self._gap_from
        self._gap_from = None

    # -- Lightning's profiler interface --------------------------------------------------------------
    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        super().setup(stage, local_rank, log_dir)
        now = time.perf_counter()
        self._close_gap(now)  # between two stages (after the fit: final_eval)
        if self.first_stage_start is None:
            self.first_stage_start = now
        if stage != "fit":
            self._fit_done = True
        self._gap_from = now
        module = getattr(self, "_lightning_module", None)
        trainer = module.trainer if module is not None else None
        if trainer is not None:
            self._instrument(trainer)

    def describe(self) -> None:  # the end of a stage (Lightning calls it after the teardown hooks)
        now = time.perf_counter()
        self._close_gap(now)
        if self._stage == "fit":
            self._fit_done = True
        self._gap_from = now
        self.teardown(stage=self._stage)

    def summary(self) -> str:
        return ""

    def finish(self) -> None:
        """The end of the run: the time since the last stage ended (writing results) is charged."""
        self._close_gap(time.perf_counter())

    # -- instrumenting what Lightning does not profile -----------------------------------------------
    def _wrap(self, owner: Any, attr: str, name: str) -> None:
        method = getattr(owner, attr, None)
        if method is None or id(method) in self._wrapped:
            return

        def wrapped(*args, **kwargs):
            with self.profile(name):
                return method(*args, **kwargs)

        setattr(owner, attr, wrapped)
        self._wrapped.add(id(wrapped))

    def _instrument(self, trainer) -> None:
        module = trainer.lightning_module
        for loop, name in (
            (trainer.fit_loop.epoch_loop.val_loop, "[Eval]validation"),
            (trainer.validate_loop, "[Eval]validation"),
            (trainer.test_loop, "[Eval]test"),
        ):
            self._wrap(loop, "run", name)
        if module is not None:
            self._wrap(module, "log", "[Logging]LightningModule.log")
            self._wrap(module, "log_dict", "[Logging]LightningModule.log_dict")
        connector = trainer._logger_connector
        for attr in (
            "on_batch_start",
            "on_batch_end",
            "update_train_step_metrics",
            "update_train_epoch_metrics",
            "log_metrics",
        ):
            self._wrap(connector, attr, f"[Logging]LoggerConnector.{attr}")
        for logger in trainer.loggers:
            for attr in ("log_metrics", "log_hyperparams", "save", "finalize"):
                self._wrap(logger, attr, f"[Logging]{type(logger).__name__}.{attr}")

    # -- results -------------------------------------------------------------------------------------
    def step_seconds(self) -> list[float]:
        """Wall time between the ends of consecutive training batches (fetch, step, hooks: a step)."""
        return [b - a for a, b in zip(self.step_ends, self.step_ends[1:])]


def _compile_report(before: int) -> dict[str, Any]:
    """What ``torch.compile`` did since the metrics were cleared."""
    from torch._dynamo.utils import counters, get_compilation_metrics

    metrics = get_compilation_metrics()[before:]
    reasons = [m.recompile_reason for m in metrics if m.recompile_reason]
    breaks = dict(counters["graph_break"])
    return {
        "frames_compiled": len(metrics),
        "recompiles": len(reasons),
        "recompile_reasons": sorted({str(r)[:300] for r in reasons}),
        "graph_breaks": sum(breaks.values()),
        "graph_break_reasons": {str(k)[:300]: v for k, v in sorted(breaks.items())},
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "compile_seconds": round(sum(m.entire_frame_compile_time_s or 0.0 for m in metrics), 2),
        "compiled_functions": sorted({str(m.co_name) for m in metrics}),
    }


def _train_overrides(
    overrides: Sequence[str], steps: int, val_check_interval: int | None, compile: bool, key: str
) -> list[str]:
    extra = [
        f"trainer.max_steps={steps}",
        f"compile={str(compile).lower()}",
        f"trainer.profiler={{_target_: benchmarks.profile_run.BucketProfiler, key: '{key}'}}",
    ]
    if val_check_interval is not None:
        extra.append(f"trainer.val_check_interval={val_check_interval}")
    return [*overrides, *extra]


@contextlib.contextmanager
def _torch_trace(steps: int, ops: list, trace_file: Path | None):
    """A ``torch.profiler`` over ``steps`` training steps after 5 untimed ones (``None``: none);
    when they are recorded, their op table goes into ``ops`` and the Chrome trace to ``trace_file``."""
    if steps <= 0:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile, schedule

    def ready(prof) -> None:
        started = time.perf_counter()
        ops.extend(_op_table(prof))
        if trace_file is not None:
            prof.export_chrome_trace(str(trace_file))
        _TRACE_EXPORT.append(time.perf_counter() - started)

    with profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=4, warmup=1, active=steps, repeat=1),
        on_trace_ready=ready,
        record_shapes=True,
    ) as prof:
        yield prof


def profile_train(
    overrides: Sequence[str] = ("experiment=shakespeare_char",),
    *,
    steps: int = 300,
    val_check_interval: int | None = 150,
    compile: bool = False,
    trace_steps: int = 0,
    trace_file: str | Path | None = None,
    tokens_per_step: int | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train through ``omniformer.train.run(overrides + ...)`` with a :class:`BucketProfiler`.

    Returns the breakdown: ``wall_seconds`` (the whole ``run`` call), ``buckets`` (seconds and
    share of the wall per bucket, ``other`` being what no range covers), ``top_actions`` (the
    ranges with the most exclusive time), per-step figures of the training steps, the validations'
    durations, the run's own results (``results.json``) and, compiled, what ``torch.compile`` did.
    ``trace_steps``: a ``torch.profiler`` records that many training steps (after 5) — ``top_ops``,
    and the Chrome trace in ``trace_file`` when given. ``tokens_per_step``: default batch × block of a
    text config (none for other data).
    """
    from benchmarks.workloads import hydra_set_aside
    from omniformer.train import run

    if tokens_per_step is None:
        tokens_per_step = _tokens_per_step(overrides)
    key = uuid.uuid4().hex
    before = 0
    if compile:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters, get_compilation_metrics

        dynamo.reset()  # this run compiles from scratch, as a fresh omniformer-train would
        counters.clear()
        before = len(get_compilation_metrics())
    args = _train_overrides(overrides, steps, val_check_interval, compile, key)
    with contextlib.ExitStack() as stack:
        folder = Path(run_dir) if run_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(hydra_set_aside())
        ops: list[dict[str, Any]] = []
        _TRACE_EXPORT.clear()
        trace = stack.enter_context(_torch_trace(trace_steps, ops, Path(trace_file) if trace_file else None))
        if trace is not None:
            _TRACES[key] = trace
        started = time.perf_counter()
        try:
            results = run(args, run_dir=folder / "run")
        finally:
            profiler = _LIVE.pop(key, None)
            _TRACES.pop(key, None)
        if profiler is not None:
            profiler.finish()
        wall = time.perf_counter() - started
    if profiler is None:
        raise RuntimeError("the training run never built benchmarks.profile_run.BucketProfiler")
    # The torch profiler's own work on its results runs inside a training batch: not the run's time.
    exported = sum(_TRACE_EXPORT)
    profiler.seconds["loop"] = max(profiler.seconds["loop"] - exported, 0.0)
    # Before the first range: composing the config, building the data, the model and the Trainer.
    first = profiler.first_stage_start or started
    profiler.seconds["setup"] += first - started
    covered = sum(v for k, v in profiler.seconds.items() if k != "other")
    profiler.seconds["other"] = max(wall - covered, 0.0)
    steps_s = profiler.step_seconds()
    steady = steps_s[min(10, len(steps_s) // 2) :] or steps_s
    report: dict[str, Any] = {
        "overrides": list(overrides),
        "steps": int(results.get("steps", steps)),
        "compile": compile,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(wall, 3),
        "buckets": [
            {
                "bucket": b,
                "seconds": round(profiler.seconds.get(b, 0.0), 3),
                "fraction": round(profiler.seconds.get(b, 0.0) / wall, 4),
            }
            for b in BUCKETS
        ],
        "covered_fraction": round(covered / wall, 4),
        "top_actions": [
            {"action": name, "calls": int(calls), "seconds": round(sec, 3)}
            for name, (calls, sec) in sorted(profiler.actions.items(), key=lambda kv: -kv[1][1])[:25]
        ],
        "first_step_ms": round(1000 * (profiler.step_ends[0] - first), 1) if profiler.step_ends else None,
        "step_ms_median": round(1000 * statistics.median(steady), 3) if steady else None,
        "step_ms_mean": round(1000 * statistics.fmean(steady), 3) if steady else None,
        "validation_seconds": [round(v, 3) for v in profiler.validations],
        "results": {k: v for k, v in results.items() if k not in ("sample", "run_dir")},
    }
    if tokens_per_step and steady:
        report["tokens_per_step"] = tokens_per_step
        report["steady_tokens_per_sec"] = round(tokens_per_step / statistics.median(steady), 1)
        report["end_to_end_tokens_per_sec"] = round(tokens_per_step * report["steps"] / wall, 1)
    if compile:
        report["compile_report"] = _compile_report(before)
    if trace_steps > 0:
        report["top_ops"] = ops  # empty when the run had fewer than trace_steps + 5 steps
        report["trace_export_seconds"] = round(exported, 3)  # in `other`, not in `loop`
    return report


def _op_table(prof) -> list[dict[str, Any]]:
    """The 25 ops (and ``omniformer/*`` ranges) with the most self CPU time in the traced steps."""
    rows = []
    events = prof.key_averages()
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:25]:
        rows.append(
            {
                "name": event.key,
                "calls": int(event.count),
                "self_cpu_ms": round(event.self_cpu_time_total / 1000, 3),
                "cpu_total_ms": round(event.cpu_time_total / 1000, 3),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------- report
def render(
    reports: Sequence[dict[str, Any]],
    title: str | None = "Where the time of a training run goes",
    heading: str = "##",
) -> str:
    """Markdown: one breakdown table with a column per run, then per-run details (``heading`` level)."""
    lines = [f"{heading[:-1] or '#'} {title}", ""] if title else []
    if not reports:
        return "\n".join([*lines, "_No runs._", ""])
    head = "| bucket | " + " | ".join(_label(r) for r in reports) + " |"
    lines += [head, "|---|" + "---|" * len(reports)]
    for i, bucket in enumerate(BUCKETS):
        cells = []
        for r in reports:
            row = r["buckets"][i]
            cells.append(f"{row['seconds']:.2f} s ({100 * row['fraction']:.1f}%)")
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    lines.append("| **wall** | " + " | ".join(f"**{r['wall_seconds']:.2f} s**" for r in reports) + " |")
    lines.append("")
    for r in reports:
        lines += [
            f"{heading} {_label(r)}",
            "",
            f"Overrides: `{' '.join(r['overrides'])}`; {r['threads']} torch threads.",
        ]
        facts = [
            f"steps {r['steps']}",
            f"first step {r['first_step_ms']} ms (from the fit's start: compilation lands here)",
            f"median step {r['step_ms_median']} ms (mean {r['step_ms_mean']})",
            f"validations during fit: {', '.join(f'{v:.2f} s' for v in r['validation_seconds']) or 'none'}",
        ]
        if "steady_tokens_per_sec" in r:
            facts.append(
                f"tokens/s: {r['steady_tokens_per_sec']:,.0f} at the median step, "
                f"{r['end_to_end_tokens_per_sec']:,.0f} end to end"
            )
        res = r["results"]
        if "val_loss" in res:
            facts.append(f"final val_loss {res['val_loss']:.4f}")
        lines += ["", *(f"- {f}" for f in facts), ""]
        if "compile_report" in r:
            c = r["compile_report"]
            lines += [
                f"torch.compile: {c['frames_compiled']} frames compiled ({c['compile_seconds']} s), "
                f"{c['recompiles']} recompiles, {c['graph_breaks']} graph breaks, "
                f"{c['unique_graphs']} graphs; functions: {', '.join(c['compiled_functions'])}",
                "",
            ]
            lines += [f"- recompile: {reason}" for reason in c["recompile_reasons"]]
            lines += [f"- graph break ({n}×): {reason}" for reason, n in c["graph_break_reasons"].items()]
            lines.append("")
        lines += ["| range (exclusive time) | calls | seconds |", "|---|---|---|"]
        lines += [f"| `{a['action']}` | {a['calls']} | {a['seconds']:.3f} |" for a in r["top_actions"][:15]]
        lines.append("")
        if r.get("top_ops"):
            lines += ["| op (torch.profiler, traced steps) | calls | self CPU ms |", "|---|---|---|"]
            lines += [f"| `{o['name']}` | {o['calls']} | {o['self_cpu_ms']:.1f} |" for o in r["top_ops"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _label(report: dict[str, Any]) -> str:
    return f"{'compiled' if report['compile'] else 'eager'}, {report['steps']} steps"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.profile_run``: profile omniformer-train runs; write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="trainer.max_steps (default 300)")
    parser.add_argument("--val-every", type=int, default=150, help="trainer.val_check_interval (default 150)")
    parser.add_argument("--compile", choices=("false", "true", "both"), default="false")
    parser.add_argument(
        "--trace-steps", type=int, default=0, help="torch.profiler over N steps (default off)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/profile_run", help="path stem of .json / .md")
    parser.add_argument("--experiment", default="shakespeare_char", help="omniformer-train experiment preset")
    parser.add_argument("overrides", nargs="*", help="more omniformer-train overrides (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = (
        [f"experiment={args.experiment}", *args.overrides] if args.experiment else list(args.overrides)
    )
    flags = {"false": [False], "true": [True], "both": [False, True]}[args.compile]
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    reports = []
    for compiled in flags:
        print(f"profiling {' '.join(overrides)} compile={compiled} ...", file=sys.stderr, flush=True)
        reports.append(
            profile_train(
                overrides,
                steps=args.steps,
                val_check_interval=args.val_every,
                compile=compiled,
                trace_steps=args.trace_steps,
                trace_file=f"{args.out}-{'compiled' if compiled else 'eager'}.trace.json",
            )
        )
    from benchmarks.machine import machine_info
    from omniformer.files import atomic_write_text, write_json

    write_json(stem.with_suffix(".json"), {"machine": machine_info("cpu"), "runs": reports})
    atomic_write_text(stem.with_suffix(".md"), render(reports))
    print(render(reports))
    print(f"written: {stem.with_suffix('.json')} and {stem.with_suffix('.md')}", file=sys.stderr)


def _tokens_per_step(overrides: Sequence[str]) -> int | None:
    """Batch × block of a text config (``None`` for other data): composed, not built."""
    from benchmarks.workloads import compose_train

    cfg = compose_train(list(overrides))
    data = cfg.data
    if "block_size" in data and "batch_size" in data:
        return int(data.batch_size) * int(data.block_size)
    return None


if __name__ == "__main__":
    # Through the importable module: Hydra builds benchmarks.profile_run.BucketProfiler, which must
    # register in that module's _LIVE, not in this __main__ copy's.
    from benchmarks.profile_run import main as _main

    _main()

"""Benchmark result files: their schema, writing them, and the Markdown table made from all of them.

One JSON file per suite run under ``benchmarks/results/`` (the machine it ran on included), and one
``benchmarks/RESULTS.md`` regenerated from every published file, so each figure in the table traces
back to the file — and the machine — it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from omniformer.files import atomic_write_text, write_json

SCHEMA = "omniformer-bench/1"

# Fields added after the first result files were written: absent in those, required to be well
# typed when present.
ADDED_LATER = {"cpu_ms_per_step", "ratio_cpu", "model_gflops_per_sec", "roof_dtype", "roof_gflops", "cpu_mfu"}

_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
TOP_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "suite": (str,),
    "publish": (bool,),
    "created": (str,),
    "command": (str,),
    "wall_seconds": _NUMBER,
    "machine": (dict,),
    "peak": (dict,),
    "settings": (dict,),
    "runs": (list,),
    "overhead": (list,),
    "skipped": (list,),
    "plots": (list,),
}
MACHINE_FIELDS: dict[str, tuple[type, ...]] = {
    "cpu_model": (str,),
    "cpu_cores": (int,),
    "torch_threads": (int,),
    "torch": (str,),
    "device": (str,),
    "device_name": (str,),
}
PEAK_FIELDS: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "dtype": (str,),
    "size": (int,),
    "flops_per_sec": _NUMBER,
}
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "experiment": (str,),
    "workload": (str,),
    "unit": (str,),
    "model": (str,),
    "variant": (str,),
    "mode": (str,),
    "compiled": (bool,),
    "precision": (str,),
    "sdpa": (str,),
    "batch_size": (int,),
    "seq_len": (int,),
    "params": (int,),
    "steps": (int,),
    "tokens_per_sec": _NUMBER,
    "samples_per_sec": _NUMBER,
    "ms_per_step": _NUMBER,
    "ms_per_step_median": _NUMBER,
    "data_ms_per_step": _NUMBER,
    "compute_ms_per_step": _NUMBER,
    "data_wait_fraction": _NUMBER,
    "peak_mem_mib": _NUMBER,
    "mem_kind": (str,),
    "flops_per_token": (int,),
    "flops_per_token_counted": (int, type(None)),
    "achieved_tflops": _NUMBER,
    "mfu": _NUMBER,
    "host_syncs_per_step": _OPTIONAL_NUMBER,
    "cpu_ms_per_step": _OPTIONAL_NUMBER,
    # against the measured CPU roof of the run's precision (suites with a `kind: roof` experiment)
    "model_gflops_per_sec": _OPTIONAL_NUMBER,
    "roof_dtype": (str, type(None)),
    "roof_gflops": _OPTIONAL_NUMBER,
    "cpu_mfu": _OPTIONAL_NUMBER,
}
#: Sections only some suites write (`kind: roof`, `profile`, `nanogpt_e2e`): checked when present.
OPTIONAL_SECTIONS: dict[str, tuple[type, ...]] = {
    "roof": (dict,),
    "profile": (list,),
    "e2e": (list,),
    "e2e_ratios": (list,),
}
ROOF_FIELDS: dict[str, tuple[type, ...]] = {
    "threads": (int,),
    "rows": (list,),
    "roof": (dict,),
    "best_shape": (dict,),
}
ROOF_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "dtype": (str,),
    "shape": (list,),
    "threads": (int,),
    "flops_per_sec": _NUMBER,
    "median_flops_per_sec": _NUMBER,
}
PROFILE_FIELDS: dict[str, tuple[type, ...]] = {
    "overrides": (list,),
    "steps": (int,),
    "compile": (bool,),
    "wall_seconds": _NUMBER,
    "buckets": (list,),
}
E2E_FIELDS: dict[str, tuple[type, ...]] = {
    "variant": (str,),
    "round": (int,),
    "steps": (int,),
    "wall_seconds": _NUMBER,
    "tokens_per_sec": _NUMBER,
    "val_loss": _OPTIONAL_NUMBER,
    "val_loss_kind": (str,),
}
OVERHEAD_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "workload": (str,),
    "model": (str,),
    "variant": (str,),
    "baseline": (str,),
    "ratio": _NUMBER,
    "ratio_median": _NUMBER,
    "ratio_paired": _NUMBER,
    "ratio_rounds": (list,),
    "ratio_cpu": _OPTIONAL_NUMBER,
    "steps": (int,),
}


def _check(where: str, data: Any, fields: Mapping[str, tuple[type, ...]], problems: list[str]) -> None:
    if not isinstance(data, dict):
        problems.append(f"{where} must be an object, got {type(data).__name__}")
        return
    for key, types in fields.items():
        if key not in data:
            if key not in ADDED_LATER:
                problems.append(f"{where}.{key} is missing")
        elif isinstance(data[key], bool) and bool not in types:
            problems.append(f"{where}.{key} must be {'/'.join(t.__name__ for t in types)}, got a bool")
        elif not isinstance(data[key], types):
            names = "/".join(t.__name__ for t in types)
            problems.append(f"{where}.{key} must be {names}, got {data[key]!r}")


def validate_result(result: Any) -> None:
    """Raise ``ValueError`` listing every way ``result`` departs from the result-file schema."""
    problems: list[str] = []
    _check("result", result, TOP_FIELDS, problems)
    if not problems:
        if result["schema"] != SCHEMA:
            problems.append(f"result.schema is {result['schema']!r}, expected {SCHEMA!r}")
        _check("result.machine", result["machine"], MACHINE_FIELDS, problems)
        _check("result.peak", result["peak"], PEAK_FIELDS, problems)
        for i, run in enumerate(result["runs"]):
            _check(f"result.runs[{i}]", run, RUN_FIELDS, problems)
            if isinstance(run, dict) and run.get("mode") not in ("train", "infer"):
                problems.append(f"result.runs[{i}].mode must be 'train' or 'infer', got {run.get('mode')!r}")
        for i, row in enumerate(result["overhead"]):
            _check(f"result.overhead[{i}]", row, OVERHEAD_FIELDS, problems)
        present = {k: result[k] for k in OPTIONAL_SECTIONS if k in result}
        _check("result", present, {k: OPTIONAL_SECTIONS[k] for k in present}, problems)
        if isinstance(present.get("roof"), dict):
            _check("result.roof", present["roof"], ROOF_FIELDS, problems)
            for i, row in enumerate(present["roof"].get("rows") or []):
                _check(f"result.roof.rows[{i}]", row, ROOF_ROW_FIELDS, problems)
        for key, fields in (("profile", PROFILE_FIELDS), ("e2e", E2E_FIELDS)):
            if isinstance(present.get(key), list):
                for i, row in enumerate(present[key]):
                    _check(f"result.{key}[{i}]", row, fields, problems)
    if problems:
        raise ValueError("benchmark result does not match its schema:\n  " + "\n  ".join(problems))


def write_result(result: dict[str, Any], results_dir: str | Path, stem: str) -> Path:
    """Validate and write ``result`` as ``<results_dir>/<stem>.json`` (atomically)."""
    validate_result(result)
    path = Path(results_dir) / f"{stem}.json"
    write_json(path, result)
    return path


def load_results(results_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every valid result file of ``results_dir``, newest first (invalid ones are skipped)."""
    found = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            validate_result(result)
        except (OSError, ValueError):
            continue
        found.append((path, result))
    found.sort(key=lambda item: item[1]["created"], reverse=True)
    return found


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _machine_line(machine: Mapping[str, Any], peak: Mapping[str, Any]) -> str:
    device = machine["device_name"] if machine["device"] != "cpu" else f"CPU only ({machine['device']})"
    return (
        f"{machine['cpu_model']}, {machine['cpu_cores']} cores ({machine['torch_threads']} torch threads), "
        f"{machine.get('memory_gib', '?')} GiB; device: {device}; torch {machine['torch']}, "
        f"Lightning {machine.get('lightning', '?')}. Measured peak: "
        f"{peak['flops_per_sec'] / 1e12:.3f} TFLOP/s ({peak['dtype']} {peak['size']}³ matmul, best of "
        f"{peak.get('repeats', '?')} at the start and the end of the run)."
    )


KIND_LABELS = {
    "overhead": "overhead vs plain loop",
    "loop_overhead": "Lightning loop alone (same data loader)",
    "compile_speedup": "compile speed-up (eager / compiled)",
}

RUN_HEADER = (
    "| experiment | workload | model | variant | mode | precision | sdpa | batch × seq | tokens/s "
    "| samples/s | model GFLOP/s | CPU MFU | ms/step (median) | data wait | peak mem (MiB) | GFLOP/token "
    "| MFU |"
)


def _run_row(run: Mapping[str, Any]) -> str:
    mem = f"{_num(run['peak_mem_mib'], 0)} {'RSS' if run['mem_kind'].startswith('rss') else 'GPU'}"
    return (
        f"| {run['experiment']} | {run['workload']} | {run['model']} | {run['variant']} | {run['mode']} "
        f"| {run['precision']} | {run['sdpa']} | {run['batch_size']} × {run['seq_len']} "
        f"| {_num(run['tokens_per_sec'], 0)} | {_num(run['samples_per_sec'], 1)} "
        f"| {_num(run.get('model_gflops_per_sec'), 1)} | {cpu_mfu_cell(run)} "
        f"| {_num(run['ms_per_step'], 2)} ({_num(run['ms_per_step_median'], 2)}) "
        f"| {100 * run['data_wait_fraction']:.1f}% | {mem} | {run['flops_per_token'] / 1e9:.4g} "
        f"| {100 * run['mfu']:.1f}% |"
    )


def cpu_mfu_cell(run: Mapping[str, Any]) -> str:
    """``41.2% fp32``: the row's model FLOP/s over the measured CPU roof of its precision."""
    if run.get("cpu_mfu") is None:
        return "–"
    short = {"float32": "fp32", "bfloat16": "bf16"}.get(run.get("roof_dtype") or "", run.get("roof_dtype"))
    return f"{100 * run['cpu_mfu']:.1f}% {short}"


def roof_best(roof: Mapping[str, Any]) -> str:
    """``float32 41.0 GFLOP/s (1024×1024×1024), ...``: the roof per dtype and the shape that set it."""
    return ", ".join(
        f"{dtype} {flops / 1e9:.1f} GFLOP/s ({'×'.join(map(str, roof['best_shape'][dtype]))})"
        for dtype, flops in roof["roof"].items()
    )


def _roof_lines(roof: Mapping[str, Any]) -> list[str]:
    best = roof_best(roof)
    isa = roof.get("isa") or {}
    flags = ", ".join(isa.get("flags") or []) or "no listed flags"
    where = f" on {isa.get('torch_cpu_capability')} ({flags})"
    lines = [
        f"CPU roof with {roof['threads']} torch threads{where if isa else ''} (best sustained `torch.mm` "
        f"rate, best of the start and the end of the run): {best}. CPU MFU = model FLOP/s over the roof "
        "of the run's precision (fp32 for 32-true, bf16 for bf16-*).",
        "",
        "| dtype | (M×K) @ (K×N) | best GFLOP/s | median GFLOP/s |",
        "|---|---|---|---|",
    ]
    for row in roof["rows"]:
        m, k, n = row["shape"]
        lines.append(
            f"| {row['dtype']} | {m}×{k} @ {k}×{n} | {row['flops_per_sec'] / 1e9:.1f} "
            f"| {row['median_flops_per_sec'] / 1e9:.1f} |"
        )
    for item in roof.get("skipped") or []:
        m, k, n = item["shape"]
        lines.append(f"| {item['dtype']} | {m}×{k} @ {k}×{n} | skipped: {item['reason']} | |")
    return [*lines, ""]


def _profile_lines(reports: list[Mapping[str, Any]]) -> list[str]:
    from benchmarks.profile_run import render

    body = render(reports, title=None, heading="####")
    return ["Where the time of the real run goes (`kind: profile`):", "", *body.rstrip().splitlines(), ""]


def _e2e_lines(result: Mapping[str, Any]) -> list[str]:
    from benchmarks.vs_nanogpt import render

    text = render({"e2e": result.get("e2e", []), "e2e_ratios": result.get("e2e_ratios", [])})
    return ["End to end against nanoGPT's loop (`kind: nanogpt_e2e`):", "", *text.rstrip().splitlines(), ""]


def render_markdown(results_dir: str | Path, title: str = "omniformer benchmark results") -> str:
    """The Markdown page of every published result file in ``results_dir`` (newest first)."""
    results_dir = Path(results_dir)
    lines = [
        f"# {title}",
        "",
        "Generated by `python -m benchmarks` from the JSON files in `benchmarks/results/` — do not edit by",
        "hand; rerun the suite (see `benchmarks/README.md`). Every figure below names the file and the",
        "machine it came from. Throughput is over the timed steps after warm-up; *ms/step* is the mean",
        "(median in brackets); *data wait* is host time outside the step body; memory is the process's",
        "peak RSS on the CPU and `torch.cuda.max_memory_allocated` on a GPU; model FLOPs per token are",
        "`6N + 12·L·D·T` for training and `2N + 4·L·D·T` for inference (PaLM appendix B, as in nanoGPT's",
        "`estimate_mfu`; N = weights used in matmuls), and MFU is against the peak matmul rate measured",
        "on the same machine in the same run.",
        "",
    ]
    published = [(path, result) for path, result in load_results(results_dir) if result["publish"]]
    if not published:
        lines.append("_No published results yet: run `python -m benchmarks`._")
    for path, result in published:
        created = result["created"].replace("T", " ")[:19]
        partial = "" if result.get("complete", True) else " (stopped early: partial)"
        lines += [
            f"## Suite `{result['suite']}` — {created} — [`{path.name}`](results/{path.name}){partial}",
            "",
            f"Machine: {_machine_line(result['machine'], result['peak'])}",
            f"Command: `{result['command']}`; settings: "
            + ", ".join(f"{k}={v}" for k, v in sorted(result["settings"].items())),
            "",
        ]
        if result.get("roof"):
            lines += _roof_lines(result["roof"])
        if result.get("e2e"):
            lines += _e2e_lines(result)
        if result.get("profile"):
            lines += _profile_lines(result["profile"])
        overhead = result["overhead"]
        if overhead:
            lines += [
                "| workload | model | comparison | variant | baseline | step-time ratio (paired by round) "
                "| per round | all steps: mean | median | process CPU time | timed steps |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in overhead:
                what = KIND_LABELS.get(row["kind"], row["kind"])
                rounds = ", ".join(f"{r:.2f}" for r in row["ratio_rounds"])
                cpu = "–" if row.get("ratio_cpu") is None else f"{row['ratio_cpu']:.3f}"
                lines.append(
                    f"| {row['workload']} | {row['model']} | {what} | {row['variant']} | {row['baseline']} "
                    f"| **{row['ratio_paired']:.3f}** | {rounds} | {row['ratio']:.3f} "
                    f"| {row['ratio_median']:.3f} | {cpu} | {row['steps']} |"
                )
            lines.append("")
        if result["runs"]:
            lines += [RUN_HEADER, _separator()]
            lines += [_run_row(run) for run in result["runs"]]
            lines.append("")
        for item in result["skipped"]:
            what = " ".join(f"{k}={v}" for k, v in item.items() if k != "reason")
            lines.append(f"- skipped ({what}): {item.get('reason')}")
        if result["skipped"]:
            lines.append("")
        for plot in result["plots"]:
            lines += [f"![{Path(plot).stem}](results/{Path(plot).name})", ""]
        for note in result.get("notes", []):
            lines.append(f"> {note}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _separator() -> str:
    return "|" + "---|" * (RUN_HEADER.count("|") - 1)


def write_markdown(results_dir: str | Path, path: str | Path) -> Path:
    """Regenerate the Markdown results page at ``path`` from ``results_dir``."""
    atomic_write_text(path, render_markdown(results_dir))
    return Path(path)


def timestamp() -> str:
    """Local time as ``YYYYmmdd-HHMMSS`` (result file names sort by it)."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")

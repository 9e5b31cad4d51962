"""The CPU roof: the best matmul rate this machine sustains, per dtype, and model FLOP/s against it.

A datasheet peak says little about 2 shared cores; what a training step can reach is bounded by how
fast *this* machine multiplies matrices of the model's own shapes with the thread count the run uses.
:func:`measure_roof` times ``(M×K) @ (K×N)`` products — the shapes of the models' projections
(e.g. the nanoGPT CPU model's MLP: 768×128 @ 128×512 and back) and large squares — in fp32 and
bf16 (AVX-512 BF16 where the CPU has it), each repeated for a minimum time so small shapes are timed
over many calls, and keeps the best rate per dtype as the roof. :func:`add_cpu_mfu` then puts every
result row's achieved model FLOP/s next to the roof of its precision ("CPU MFU": fp32 roof for
``32-true``, bf16 roof for ``bf16-*``).

This is the CPU counterpart of nanoGPT's ``estimate_mfu`` against an A100's 312 TFLOP/s, with the
denominator measured rather than quoted (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from benchmarks.machine import DTYPES

#: The dtypes a CPU roof is measured in (the peak's table, without float16: CPUs have no fast fp16 path).
ROOF_DTYPES = {name: DTYPES[name] for name in ("float32", "bfloat16")}

#: Which roof a Lightning precision computes against (None: no CPU roof applies).
PRECISION_DTYPE = {
    "32-true": "float32",
    "32": "float32",
    "bf16-mixed": "bfloat16",
    "bf16-true": "bfloat16",
    "bf16": "bfloat16",
}


def check_roof_settings(dtypes: Sequence[str], shapes: Sequence[Sequence[int]], repeats: int) -> None:
    """Raise one ``ValueError`` naming every bad setting of a roof measurement."""
    problems = []
    unknown = [d for d in dtypes if d not in ROOF_DTYPES]
    if unknown or not dtypes:
        problems.append(f"dtypes={list(dtypes)}: choose from {sorted(ROOF_DTYPES)}")
    for shape in shapes:
        if len(shape) != 3 or any(int(x) < 1 for x in shape):
            problems.append(f"shape {list(shape)} is not [M, K, N] with positive sizes")
    if not shapes:
        problems.append("shapes is empty: give [M, K, N] triples, e.g. [[768, 128, 512]]")
    if repeats < 1:
        problems.append(f"repeats={repeats} must be >= 1")
    if problems:
        raise ValueError("roof: " + "; ".join(problems))


def time_matmul(
    m: int,
    k: int,
    n: int,
    dtype: str,
    *,
    repeats: int = 5,
    min_seconds: float = 0.2,
    warmup: int = 3,
    max_seconds: float = 4.0,
) -> dict[str, Any]:
    """Best and median FLOP/s of ``(m×k) @ (k×n)`` in ``dtype`` on the CPU (``torch.mm`` into a
    preallocated output, random operands: zeros run faster than real data on some hardware).

    Each of ``repeats`` timings runs the product as many times as fit in ``min_seconds``, so a
    0.1 ms product is not timed by one call. ``max_seconds`` bounds the shape's total time: a product
    that slow (bf16 on a CPU without bf16 instructions runs at ~1 GFLOP/s) is timed fewer times,
    down to its first call alone.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(ROOF_DTYPES[dtype])
    b = torch.randn(k, n, generator=generator).to(ROOF_DTYPES[dtype])
    out = torch.empty(m, n, dtype=ROOF_DTYPES[dtype])
    flops = 2.0 * m * k * n
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    one = max(time.perf_counter() - start, 1e-7)
    if one * (warmup + repeats) > max_seconds:  # slow: as many timed calls as the budget allows
        rates = [flops / one]
        for _ in range(min(repeats, int(max_seconds / one)) - 1):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            rates.append(flops / (time.perf_counter() - start))
        calls = 1
    else:
        for _ in range(warmup - 1):
            torch.mm(a, b, out=out)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        one = max(time.perf_counter() - start, 1e-7)
        calls = max(1, int(min_seconds / one))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b, out=out)
            rates.append(flops * calls / (time.perf_counter() - start))
    return {
        "dtype": dtype,
        "shape": [m, k, n],
        "flops_per_sec": max(rates),
        "median_flops_per_sec": statistics.median(rates),
        "calls_per_repeat": calls,
        "repeats": len(rates),
    }


def cpu_isa() -> dict[str, Any]:
    """What the bf16 roof depends on: torch's CPU capability and the matmul-relevant CPU flags."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": [f for f in wanted if f in flags],
    }


def measure_roof(
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    shapes: Sequence[Sequence[int]] = ((768, 128, 512), (768, 512, 128), (1024, 1024, 1024)),
    repeats: int = 5,
    min_seconds: float = 0.2,
    max_call_seconds: float = 3.0,
) -> dict[str, Any]:
    """Time every ``[M, K, N]`` of ``shapes`` in every dtype with the current torch thread count.

    Shapes run smallest first; one whose single product would take longer than ``max_call_seconds``
    at the best rate seen so far for its dtype is skipped (listed in ``skipped``): a 2048³ bf16
    product takes ~40 s on a CPU without bf16 instructions. Returns ``rows`` (one per dtype and
    timed shape), ``roof`` (dtype → best FLOP/s over its shapes), ``best_shape``, ``threads``,
    ``skipped`` and ``isa`` (:func:`cpu_isa`).
    """
    check_roof_settings(dtypes, shapes, repeats)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    for dtype in dtypes:
        best = 0.0
        for shape in sorted((list(map(int, s)) for s in shapes), key=lambda s: s[0] * s[1] * s[2]):
            flops = 2.0 * shape[0] * shape[1] * shape[2]
            if best and flops / best > max_call_seconds:
                reason = f"one product would take ~{flops / best:.0f} s at {best / 1e9:.1f} GFLOP/s"
                skipped.append({"dtype": dtype, "shape": shape, "reason": reason})
                continue
            row = time_matmul(*shape, dtype, repeats=repeats, min_seconds=min_seconds)
            row["threads"] = threads
            rows.append(row)
            best = max(best, row["flops_per_sec"])
    return {"threads": threads, "rows": rows, "skipped": skipped, "isa": cpu_isa(), **_best(rows)}


def _best(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    roof: dict[str, float] = {}
    best_shape: dict[str, list[int]] = {}
    for row in rows:
        if row["flops_per_sec"] > roof.get(row["dtype"], 0.0):
            roof[row["dtype"]] = row["flops_per_sec"]
            best_shape[row["dtype"]] = list(row["shape"])
    return {"roof": roof, "best_shape": best_shape}


def merge_roofs(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """Two measurements of the same grid (start and end of a run): the better rate of each row."""
    later = {(r["dtype"], tuple(r["shape"])): r for r in again["rows"]}
    merged = []
    for a in first["rows"]:
        b = later.get((a["dtype"], tuple(a["shape"])), a)
        row = dict(a if a["flops_per_sec"] >= b["flops_per_sec"] else b)
        row["flops_per_sec_runs"] = [a["flops_per_sec"], b["flops_per_sec"]]
        merged.append(row)
    return {**first, "rows": merged, **_best(merged)}


def add_cpu_mfu(runs: Iterable[dict[str, Any]], roof: dict[str, float]) -> None:
    """Add ``model_gflops_per_sec``, ``roof_dtype``, ``roof_gflops`` and ``cpu_mfu`` to each CPU row.

    ``cpu_mfu`` = achieved model FLOP/s (``flops_per_token × tokens/s``) over the roof of the row's
    precision; ``None`` where no roof of that dtype was measured.
    """
    for run in runs:
        achieved = run["flops_per_token"] * run["tokens_per_sec"]
        dtype = PRECISION_DTYPE.get(str(run.get("precision")))
        peak = roof.get(dtype) if dtype else None
        run["model_gflops_per_sec"] = round(achieved / 1e9, 3)
        run["roof_dtype"] = dtype
        run["roof_gflops"] = None if peak is None else round(peak / 1e9, 2)
        run["cpu_mfu"] = None if not peak else round(achieved / peak, 4)

"""The machine a benchmark ran on: what it is, how fast its matmuls are, how much memory a run took.

Every result file carries :func:`machine_info`, so a figure is never separated from the machine that
produced it. MFU is computed against :func:`measure_peak_flops`, a matrix product timed on the same
machine in the same process, rather than a datasheet figure the machine may never reach.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: The dtypes a peak (and the CPU roof, benchmarks/roof.py) can be measured in, by config name.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Hardware and software a result was measured with (stored in every result file)."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _total_memory_gib(),
        "device": device,
        "device_name": cpu_model(),
    }
    try:
        import lightning

        info["lightning"] = lightning.__version__
    except ImportError:  # pragma: no cover - lightning is a dependency
        info["lightning"] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            device_name=props.name,
            cuda=torch.version.cuda,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            compute_capability=f"{props.major}.{props.minor}",
        )
    return info


def _total_memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak_flops(
    device: str = "cpu", dtype: str = "float32", size: int = 2048, repeats: int = 5, warmup: int = 2
) -> dict[str, Any]:
    """Time ``size³`` matrix products on ``device``; return the best rate seen (FLOP/s) and the median.

    Random operands (never zeros: they run faster than real data on some hardware). The best of
    ``repeats`` is the peak MFU is measured against: the most this machine was seen to do, so noise
    from other processes lowers the peak less than it would lower a mean.
    """
    if dtype not in DTYPES:
        raise ValueError(f"peak.dtype={dtype!r} is not supported; choose one of {sorted(DTYPES)}")
    if size < 16 or repeats < 1:
        raise ValueError(f"peak.size must be >= 16 and peak.repeats >= 1, got {size} and {repeats}")
    dev = torch.device(device)
    generator = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(size, size, device=dev, generator=generator).to(DTYPES[dtype])
    b = torch.randn(size, size, device=dev, generator=generator).to(DTYPES[dtype])
    for _ in range(warmup):
        torch.mm(a, b)
    synchronize(dev)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(dev)
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    seconds.sort()
    return {
        "device": device,
        "dtype": dtype,
        "size": size,
        "repeats": repeats,
        "flops_per_sec": flops / seconds[0],
        "median_flops_per_sec": flops / seconds[len(seconds) // 2],
    }


def _read_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class PeakMemory:
    """Peak memory while a block runs: resident set size on the CPU, allocated memory on a GPU.

    On Linux the process's RSS high-water mark is reset at the start (``/proc/self/clear_refs``),
    so ``peak_mib`` is the process peak during the block (it includes the interpreter, torch and
    anything else alive). Where the reset is impossible it falls back to the lifetime peak
    (``getrusage``) and says so in ``kind``.
    """

    device: torch.device
    peak_mib: float = 0.0
    kind: str = "rss"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "rss"
        except OSError:
            self.kind = "rss_lifetime"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        hwm = _read_status_kib("VmHWM") if self.kind == "rss" else None
        if hwm is None:
            self.kind = "rss_lifetime"
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.peak_mib = hwm / 1024

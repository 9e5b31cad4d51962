"""Benchmarks of omniformer: throughput, step-time breakdown, memory, FLOPs/MFU and framework overhead.

Not part of the installed package: run from the repository root. ``python -m benchmarks``
(:func:`main`) runs a Hydra-configured suite (``benchmarks/conf/bench.yaml`` +
``benchmarks/conf/suite/{cpu,gpu,smoke,roof,e2e}.yaml``) over workloads — ``omniformer-train``
configurations named in ``bench.yaml`` — and writes one JSON result file per run under
``benchmarks/results/`` plus the regenerated table ``benchmarks/RESULTS.md``. The modules
``image_throughput``, ``audio_throughput`` and ``callback_overhead`` are single-question studies
over the same runners; ``profile_run`` (where a real run's time goes) and ``vs_nanogpt`` (end to
end against nanoGPT's loop) are commands of their own as well as suite experiments. See
``benchmarks/README.md``.
"""

from benchmarks.cli import main, run_suite
from benchmarks.workloads import Workload

__all__ = ["Workload", "main", "run_suite"]

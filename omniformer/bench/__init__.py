"""Benchmarks of omniformer: throughput, step-time breakdown, memory, FLOPs/MFU and framework overhead.

``omniformer-bench`` (:func:`main`) runs a Hydra-configured suite (``conf/bench.yaml`` +
``conf/suite/{cpu,gpu,smoke}.yaml``) over workloads — ``omniformer-train`` configurations named in
``bench.yaml`` — and writes one JSON result file per run under ``benchmarks/results/`` plus the
regenerated table ``benchmarks/RESULTS.md``. See ``benchmarks/README.md``.
"""

from omniformer.bench.cli import main, run_suite
from omniformer.bench.workloads import Workload

__all__ = ["Workload", "main", "run_suite"]

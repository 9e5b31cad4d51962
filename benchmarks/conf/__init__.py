"""Hydra configs of the benchmark suite: ``bench.yaml`` (workloads) and ``suite/`` (what to run)."""

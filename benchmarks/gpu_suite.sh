#!/usr/bin/env bash
# The whole GPU benchmark suite in one command, under 5 minutes on one H200:
#   benchmarks/gpu_suite.sh                 # on a CUDA machine
#   benchmarks/gpu_suite.sh --dry-run       # every code path for a step or two on the CPU, toy sizes
#   benchmarks/gpu_suite.sh suite.experiments.scaling=null    # extra Hydra overrides pass through
#
# Runs `python -m benchmarks suite=gpu` (benchmarks/conf/suite/gpu.yaml): bf16-mixed autocast,
# fused AdamW, torch.compile'd backbone, flash SDPA, pinned batches with non_blocking copies, host syncs per
# step counted; GPT-2-124M shape at sequence 1024 (tokens/s, MFU), SDPA kernels, batch × sequence
# scaling. Results go to benchmarks/results/ (+ RESULTS.md), and to $OUT when it is set (the device
# tool's output folder), together with this script's log.
#
# The package need not be installed: the repository root goes on PYTHONPATH. Python packages the
# machine lacks (hydra-core, omegaconf, antlr4-python3-runtime, ...) are installed from wheels in
# .whl/ when that folder exists; benchmarks/README.md says how to download them.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
ARGS=()
if [[ "${1:-}" == "--dry-run" ]]; then
  ARGS+=(dry_run=true)
  shift
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${OMNIFORMER_WHEEL_SITE:-/tmp/omniformer-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export OMNIFORMER_CACHE=${OMNIFORMER_CACHE:-/tmp/omniformer-cache}
RESULTS=${OMNIFORMER_BENCH_RESULTS:-benchmarks/results}
MARKDOWN=${OMNIFORMER_BENCH_MARKDOWN:-benchmarks/RESULTS.md}
LOG=/dev/null
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  LOG="$OUT/gpu_suite.log"
fi

"$PY" - <<'PYCHECK'
import importlib, sys
missing = [m for m in ("torch", "lightning", "hydra", "omegaconf", "einops", "torchmetrics", "tokenizers")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_suite.sh: missing Python packages {missing}; carry their wheels in .whl/ "
             "(benchmarks/README.md, 'Running the GPU suite')")
PYCHECK

{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  # `timeout` bounds the run (the device lease is short); the suite itself takes ~3-4 minutes.
  timeout "${GPU_SUITE_TIMEOUT:-290}" "$PY" -m benchmarks suite=gpu "results_dir=$RESULTS" \
    "markdown=$MARKDOWN" ${ARGS[@]+"${ARGS[@]}"} "$@"
} 2>&1 | tee "$LOG"

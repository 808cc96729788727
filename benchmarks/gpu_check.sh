#!/usr/bin/env bash
# On a CUDA machine: trains each generator family and the conv tokenizer for a few hundred
# bf16 steps, checks their losses fall, and prints images/s and the fraction of the GPU's
# measured bf16 matmul peak (see benchmarks/gpu_check.py). Elsewhere: says so and exits 0.
#
#     bash benchmarks/gpu_check.sh [STEPS]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${PYTHON:-}" ]; then  # the project's environment (make test makes it), else python
    PYTHON=python
    if [ -x ../.venv/bin/python ]; then PYTHON=../.venv/bin/python; fi
fi
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; run make test first, or set PYTHON" >&2
    exit 1
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU here, nothing to check"
    exit 0
fi
exec "$PYTHON" gpu_check.py "$@"

#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU, in one run: build with cmake-js (CUDA
# included), run the test suite on CUDA, then test/gpu/check.ts (CUDA against the CPU and the
# float64 reference on fresh random inputs, guard regions, bitwise repeatability, rows x V past
# 2^31, and the kernels timed with CUDA events; TRL's way through PyTorch when it is installed).
# Output: bench/results/gpu-<time>.txt and .json. Replay a run with FDPO_SEED=<seed>.
#
# Needs node (FDPO_NODE=/path/to/node if it is not on PATH), node_modules from `npm ci`, nvcc,
# cmake and a GPU with its driver.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE=${FDPO_NODE:-node}
export PATH="$(dirname "$(command -v "$NODE")"):$PATH"
stamp=$(date -u +%Y-%m-%dT%H-%M-%S)
out=bench/results/gpu-$stamp
mkdir -p bench/results
{
  echo "# test/gpu/run.sh at $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $stamp"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader || true
  echo "## build (cmake-js, CUDA)"
  "$NODE" node_modules/cmake-js/bin/cmake-js rebuild --out build 2>&1 | grep -E "fused-dpo:|spill|error" | sort | uniq -c | sort -rn | head -20
  export FUSED_DPO_NATIVE=$PWD/build/Release/fused_dpo.node
  echo "## the test suite on CUDA"
  FUSED_DPO_BACKEND=cuda "$NODE" --import tsx test/run.ts 2>&1 | tail -40
  echo "## CUDA against the CPU and the reference, and timings"
  "$NODE" --import tsx test/gpu/check.ts "$out.json"
} 2>&1 | tee "$out.txt"

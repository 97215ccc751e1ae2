#!/usr/bin/env bash
# The CUDA backend's checks on a machine with an NVIDIA GPU, in one run of a fixed time budget:
#   1. build the addon with cmake-js for this GPU's architecture (the carried prebuilt addon if
#      the build fails), printing ptxas's spill report;
#   2. test/gpu/check.ts: CUDA against the CPU and the float64 reference on fresh random inputs,
#      guard regions, bitwise repeatability, rows x V past 2^31, and the kernels timed with CUDA
#      events at 16384 tokens x V = 128256 bf16 (TRL's way through PyTorch when it is installed);
#   3. compute-sanitizer's memcheck and racecheck over check.ts --quick, when it is installed;
#   4. the float64-reference test files with every call on CUDA, in the time left.
# A failed stage is reported and the next one runs; the last lines sum up every stage.
# Output: gpu-<time>.txt and .json in $OUT (the device tool's folder) or else bench/results/.
#
# Usage: bash test/gpu/run.sh [--quick]
#   --quick  small sizes, no TRL, no sanitizers: rehearses this script on the CPU emulation of
#            CUDA (FUSED_DPO_NATIVE=build-emulated/Release/fused_dpo.node) before GPU time is spent.
# Environment: FDPO_GPU_BUDGET_S (seconds for the whole run, default 420); FUSED_DPO_NATIVE (an
# addon to use instead of building); FDPO_SEED (replays a run); FDPO_NODE (node, when not on PATH).
# On the device machine, which has no Node: test/gpu/carry.sh here first, then
#   run(command: "bash test/gpu/run.sh", carry: [".gpu-carry"], timeout_s: 480).
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
budget=${FDPO_GPU_BUDGET_S:-420}
quick=
[ "${1:-}" = --quick ] && quick=--quick

# Node and node_modules from .gpu-carry/ (test/gpu/carry.sh), when carried. xz may be missing
# there; Python's lzma is not.
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; }
if [ -f .gpu-carry/node.xz ]; then
  mkdir -p /tmp/fdpo-node
  unxz .gpu-carry/node.xz >/tmp/fdpo-node/node && chmod +x /tmp/fdpo-node/node
  export FDPO_NODE=/tmp/fdpo-node/node
fi
if [ ! -d node_modules ] && [ -f .gpu-carry/node_modules.tar.xz ]; then
  unxz .gpu-carry/node_modules.tar.xz | tar -xf -
fi
NODE=$(command -v "${FDPO_NODE:-node}") || { echo "run.sh: no node (set FDPO_NODE, or carry .gpu-carry)" >&2; exit 1; }
# (the toolkit's usual home, for nvcc and compute-sanitizer when they are not on PATH)
export PATH="$(dirname "$NODE"):$PATH:/usr/local/cuda/bin"
export FDPO_SEED=${FDPO_SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}

dest=${OUT:-bench/results}
mkdir -p "$dest"
out=$dest/gpu-$(date -u +%Y-%m-%dT%H-%M-%S)
summary=()

# stage <name> <at most seconds> <command...>: runs it within what is left of the budget.
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((budget - (SECONDS - start)))
  # --quick runs on the slow emulation: only the whole budget bounds its stages.
  if [ -n "$quick" ] || [ "$left" -lt "$cap" ]; then cap=$left; fi
  if [ "$cap" -lt 15 ]; then
    echo "## $name: skipped, the budget is spent"
    summary+=("$name: skipped (budget spent)")
    return
  fi
  echo "## $name (at most ${cap} s)"
  local began=$SECONDS
  # A function (build, sanitize) runs in a child bash, which gets it exported.
  if declare -F "$1" >/dev/null; then set -- bash -c '"$@"' _ "$@"; fi
  timeout -k 5 "$cap" "$@"
  local rc=$? verdict=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="timed out"; elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"; fi
  summary+=("$name: $verdict, $((SECONDS - began)) s")
}

build() {
  # Only this GPU's architecture: the full list is built (and checked for spills) in CI.
  local cc arch
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  arch=${cc:+${cc}-real}
  FDPO_PTXAS_REPORT=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$NODE" node_modules/cmake-js/bin/cmake-js rebuild --out build \
    ${arch:+--CDCMAKE_CUDA_ARCHITECTURES=$arch} >"$out.build.log" 2>&1
  local rc=$?
  grep -E "fused-dpo:|error" "$out.build.log" | head -20
  # ptxas: registers and spills of the pass A / pass B kernels (demangled names are long).
  grep -A2 -E "Compiling entry function '.*(forward|backward)Kernel" "$out.build.log" |
    grep -oE "Used [0-9]+ registers|[0-9]+ bytes spill (stores|loads)" | sort | uniq -c
  return $rc
}

sanitize() {
  compute-sanitizer --tool "$1" --error-exitcode 3 --print-limit 20 "$NODE" --import tsx test/gpu/check.ts --quick --no-trl 2>&1 | tail -25
}

export -f build sanitize
export NODE out
{
  version=$(git describe --always --dirty 2>/dev/null || cat .gpu-carry/commit 2>/dev/null || echo '(unknown)')
  echo "# test/gpu/run.sh at $version, FDPO_SEED=$FDPO_SEED, budget ${budget} s"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.memory --format=csv 2>/dev/null || echo "(no nvidia-smi)"
  nvcc --version 2>/dev/null | tail -1
  echo "node $("$NODE" --version), $(nproc) CPUs"

  if [ -n "${FUSED_DPO_NATIVE:-}" ]; then
    echo "## build: skipped, FUSED_DPO_NATIVE=$FUSED_DPO_NATIVE"
  else
    stage "build (cmake-js, CUDA)" 240 build
    if [ -f build/Release/fused_dpo.node ]; then
      export FUSED_DPO_NATIVE=$PWD/build/Release/fused_dpo.node
    elif [ -f .gpu-carry/fused_dpo.node ]; then
      echo "## THE BUILD FAILED: using the carried prebuilt addon (.gpu-carry/fused_dpo.node); see $out.build.log"
      export FUSED_DPO_NATIVE=$PWD/.gpu-carry/fused_dpo.node
    fi
  fi

  stage "CUDA against the CPU and the float64 reference; timings" 240 "$NODE" --import tsx test/gpu/check.ts $quick "$out.json"
  if [ -n "$quick" ]; then
    summary+=("compute-sanitizer: skipped (--quick)")
  elif ! command -v compute-sanitizer >/dev/null; then
    echo "## compute-sanitizer: not installed here, skipped"
    summary+=("compute-sanitizer: skipped (not installed)")
  else
    stage "compute-sanitizer memcheck (check.ts --quick)" 90 sanitize memcheck
    stage "compute-sanitizer racecheck (check.ts --quick)" 90 sanitize racecheck
  fi
  tests='native-vs-reference|device|orpo-confident|deferred|guards|errors|binding-checks|determinism|backend'
  [ -n "$quick" ] && tests='device|binding-checks'
  stage "the float64-reference tests, every call on CUDA" 600 env FUSED_DPO_BACKEND=cuda \
    FDPO_TEST_PATTERN="^($tests)\\.test\\.ts\$" "$NODE" --import tsx test/run.ts

  echo "## summary ($((SECONDS - start)) s of ${budget} s)"
  printf '  %s\n' "${summary[@]}"
} 2>&1 | tee "$out.txt"

#!/usr/bin/env bash
# `npm run test:sanitize`: the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the CPU backend (CMake option FDPO_SANITIZE, built into build-asan/ so build/ is left
# alone). Any finding fails the run: ASan aborts on its first report, and the build makes UBSan
# findings fatal too (-fno-sanitize-recover). A canary first proves that this harness would notice.
#
# Left out, each because it exercises no addon code under the sanitizers and costs minutes here:
#   c-abi       builds its own (unsanitized) libfused_dpo.so with CMake and runs C programs on it
#   aarch64     the same, cross-built for aarch64 and run under qemu
#   half-convert  builds and runs a C++ program of its own (the scalar conversions)
#   cuda-build  compiles the CUDA backend with nvcc (and the sanitizer build has no CUDA)
#   pack        npm pack + npm install of the tarball, which loads the prebuild, not this build
#   node-gyp-fallback  builds binding.gyp with node-gyp in a temporary copy (an unsanitized binary)
#   python      builds and loads build-c/libfused_dpo.so from Python (and its compilers crash under
#               the preloaded ASan runtime)
# FDPO_TEST_PATTERN, when set, replaces the default selection.
set -euo pipefail
cd "$(dirname "$0")/../.."

build=build-asan
mkdir -p "$build"
./node_modules/.bin/cmake-js build --out "$build" --CDFDPO_CUDA=OFF --CDFDPO_SANITIZE=ON --parallel "$(nproc)" >"$build/cmake-js.log" 2>&1 ||
  { tail -40 "$build/cmake-js.log"; echo "sanitizer build failed (full log: $build/cmake-js.log)"; exit 1; }
echo "sanitizer build: $build/Release/fused_dpo.node"

libasan=$(gcc -print-file-name=libasan.so)
[ -f "$libasan" ] || { echo "libasan.so not found (gcc -print-file-name gave '$libasan')"; exit 1; }
# The ASan runtime must come first in the process; V8 keeps its memory at exit, so no leak report.
sanitized=(env LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1)

# Canary: a heap overflow and a signed overflow, each in a library's constructor, loaded by node as
# the addon is. Each must end node with a sanitizer report; if not, a clean run would mean nothing.
canary_dir=$(mktemp -d)
trap 'rm -rf "$canary_dir"' EXIT
for bug in heap_overflow signed_overflow; do
  cat >"$canary_dir/$bug.c" <<'EOF'
#include <stdlib.h>
volatile int sink;
__attribute__((constructor)) static void bug(void) {
#ifdef heap_overflow
  volatile char* p = malloc(8);
  sink = p[8];
#else
  volatile int big = 0x7fffffff;
  sink = big + 1;
#endif
}
EOF
  gcc -shared -fPIC -fsanitize=address,undefined -fno-sanitize-recover=undefined -D"$bug" -o "$canary_dir/$bug.so" "$canary_dir/$bug.c"
  # (the braces' 2>/dev/null silences bash's own "Aborted" notice; node's output is in $bug.out)
  if { "${sanitized[@]}" node -e "try { process.dlopen({ exports: {} }, '$canary_dir/$bug.so') } catch {}" >"$canary_dir/$bug.out" 2>&1; } 2>/dev/null; then
    echo "canary $bug: node exited 0, so sanitizer findings would go unnoticed"; exit 1
  fi
  grep -q -e 'AddressSanitizer' -e 'runtime error' "$canary_dir/$bug.out" ||
    { cat "$canary_dir/$bug.out"; echo "canary $bug: no sanitizer report"; exit 1; }
done
echo "canaries: a heap overflow and a signed overflow each fail node with a report"

export FUSED_DPO_NATIVE="$PWD/$build/Release/fused_dpo.node"
export FDPO_TEST_PATTERN="${FDPO_TEST_PATTERN:-^(?!(c-abi|aarch64|half-convert|cuda-build|pack|node-gyp-fallback|python)\.test\.ts$).*\.test\.ts$}"
start=$SECONDS
status=0
"${sanitized[@]}" node --import tsx test/run.ts || status=$?
echo "sanitizer run: $((SECONDS - start)) s, exit $status"
exit "$status"

#!/bin/sh
# prebuildify's --node-gyp: it calls `<this> rebuild --target=… --devdir=… --arch=… --release`
# and then takes the .node from build/Release. An N-API binary does not depend on the Node
# version and cmake-js reads napi.h from node-api-headers, so those arguments are not needed:
# build with cmake-js instead of node-gyp, so the prebuild holds everything CMakeLists.txt builds
# (the CUDA backend too where nvcc is found).
set -e
# CMake's CUDA check does not look in /usr/local/cuda/bin.
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
# Incremental in build/ (as `npm run build`), with the release options stated so that a cache
# left by a CPU-only, emulated or sanitizer build cannot carry over into the prebuild.
cmake-js configure --out build --CDFDPO_CUDA=ON --CDFDPO_CUDA_EMULATION=OFF --CDFDPO_SANITIZE=OFF
exec cmake-js build --out build

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
exec cmake-js rebuild --out build

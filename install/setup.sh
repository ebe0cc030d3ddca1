#!/usr/bin/env bash
# make setup: everything the project needs on a fresh Debian 12 machine.
#
#   install/setup.sh            all steps: apt venv sdist caffe check
#   install/setup.sh STEP...    only those steps (in the order given)
#   install/setup.sh key        print the Caffe build cache key and exit
#   install/setup.sh sdist-path print where the verified sdist is and exit
#
# Offline (FCN_BUNDLE=path of an archive from 'make bundle'): the steps are
# bundle venv sdist caffe check; no apt, no root, and nothing reaches for the network:
# the bundle's libraries are unpacked into the cache, Boost is compiled with Caffe for
# $PYTHON, and .venv uses $PYTHON's installed packages where their versions fit.
#
# From a wheel (FCN_WHEEL=path of one 'make wheel' wrote): the steps are venv wheel
# check; nothing is compiled and no Debian package is needed.
#
# Idempotent: every step checks what is there and does only what is missing.
# A failed step prints one line "setup: STEP failed: WHAT TO DO" and exits 1;
# rerunning continues from where it stopped.
#
# Environment:
#   PYTHON           interpreter for .venv (default python3; must match Boost.Python)
#   FCN_CACHE_DIR    build cache (default ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe)
#   FCN_CAFFE_SDIST  use this sdist file instead of downloading it (still hash-checked)
#   FCN_BUNDLE       install offline from this bundle (see above and README)
#   FCN_WHEEL        install this wheel of Caffe instead of building one
#   FCN_GPU, FCN_CUDNN, FCN_CUDA_ARCH, CUDA_HOME   the GPU build (docs/gpu.md)
#   FCN_VENV         the venv to fill (default .venv; make wheel builds in its own)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAFFE_DIR=$ROOT/third_party/caffe
VENV=${FCN_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PYTHON=${PYTHON:-python3}
CACHE=${FCN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fcn-caffe}
# shellcheck source=../third_party/caffe/sdist.env
. "$CAFFE_DIR/sdist.env"

APT_PACKAGES=(build-essential cmake pkg-config patch protobuf-compiler libprotobuf-dev
  libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-openmp-dev
  libboost-python-dev libboost-system-dev libboost-thread-dev
  libboost-filesystem-dev libboost-regex-dev python3-dev python3-venv)

say() { echo "setup: $*"; }
die() { echo "setup: $1 failed: $2" >&2; exit 1; }
# run STEP HINT LOG CMD...: run CMD with its output appended to LOG; on failure die with
# HINT and the log's path.
run() {
  local step=$1 hint=$2 log=$3; shift 3
  mkdir -p "$(dirname "$log")"
  "$@" >>"$log" 2>&1 || die "$step" "$hint (log: $log)"
}
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---- offline: the unpacked bundle (install/bundle.py verifies every file against its manifest)
OFFLINE=${FCN_BUNDLE:+1}
BUNDLE_DIR=
bundle_dir() {
  [ -n "$BUNDLE_DIR" ] && return
  [ -f "$FCN_BUNDLE" ] || die bundle "FCN_BUNDLE=$FCN_BUNDLE: no such file"
  command -v "$PYTHON" >/dev/null || die bundle "no '$PYTHON' on PATH; set PYTHON=/path/to/python3"
  BUNDLE_DIR=$CACHE/bundle/$(sha256 "$FCN_BUNDLE" | cut -c1-16)
  [ -f "$BUNDLE_DIR/.complete" ] && return       # unpacked and verified before
  local err=$CACHE/logs/bundle.err
  mkdir -p "$CACHE/logs"
  say "bundle: checking every file of $FCN_BUNDLE against its manifest and unpacking it (a minute)"
  (cd "$ROOT" && "$PYTHON" install/bundle.py unpack "$(realpath "$FCN_BUNDLE")" "$CACHE/bundle" >/dev/null 2>"$err") ||
    die bundle "$(tail -n1 "$err" | sed 's/^bundle.py: //')"
}
step_bundle() {
  bundle_dir
  say "bundle: $(realpath "$FCN_BUNDLE") verified, unpacked in $BUNDLE_DIR"
}

# ---- GPU build: FCN_GPU=1 asks for it, FCN_GPU=0 forbids it; unset, it follows whether
# an NVIDIA GPU answers (nvidia-smi). The toolkit is CUDA_HOME when set, else the PyPI
# wheels of requirements-cuda.txt installed into the cache.
CUDA_MAJOR=13
# Unset, it also keeps the build the venv holds: after FCN_GPU=1 make setup, a plain make
# test or make demo stays on the CUDA build (and FCN_CUDNN likewise).
gpu_build() {
  case ${FCN_GPU:-} in
    1) return 0 ;;
    0) return 1 ;;
    "") { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } ||
        installed_has cuda ;;
    *) die setup "FCN_GPU=$FCN_GPU: use FCN_GPU=1 (CUDA build), FCN_GPU=0 (CPU build) or leave it unset" ;;
  esac
}
cudnn_build() {
  case ${FCN_CUDNN:-} in 1) return 0 ;; 0) return 1 ;; *) installed_has cudnn ;; esac
}
# installed_has cuda|cudnn: what the caffe installed in the venv was built with
installed_has() {
  grep -qs "\"$1\": true" "$VENV"/lib/python3*/site-packages/caffe/fcn_build.json
}

# Sets and exports FCN_CUDA_HOME and FCN_CUDA_ARCHS for build.sh.
cuda_toolkit() {
  [ -n "${FCN_CUDA_HOME:-}" ] && return
  local smi=; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && smi=1
  if [ -n "$smi" ]; then
    local drv; drv=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1)
    if [ -n "$drv" ] && [ "$drv" -lt "$CUDA_MAJOR" ]; then
      die cuda "the NVIDIA driver runs CUDA up to $drv.x, this build needs CUDA $CUDA_MAJOR (driver 580 or newer); update the driver, or FCN_GPU=0 for the CPU build"
    fi
  fi
  if [ -n "${CUDA_HOME:-}" ]; then
    [ -x "$CUDA_HOME/bin/nvcc" ] || die cuda "CUDA_HOME=$CUDA_HOME has no bin/nvcc; point it at a CUDA toolkit or unset it to use the PyPI wheels"
    FCN_CUDA_HOME=$CUDA_HOME
  else
    local reqs=("$ROOT/requirements-cuda.txt")
    cudnn_build && reqs+=("$ROOT/requirements-cudnn.txt")
    local dir; dir=$CACHE/cuda/$(cat "${reqs[@]}" | sha256sum | cut -c1-16)
    if [ ! -f "$dir/.complete" ]; then
      [ -x "$PY" ] || die cuda "no .venv yet; run the venv step first"
      rm -rf "$dir"; mkdir -p "$dir"
      local from=()
      [ -n "$OFFLINE" ] && { bundle_dir; from=(--no-index --find-links "$BUNDLE_DIR/wheels"); }
      say "cuda: installing the CUDA $CUDA_MAJOR toolkit wheels of requirements-cuda.txt into $dir"
      local r args=()
      for r in "${reqs[@]}"; do args+=(-r "$r"); done
      run cuda "pip install -r ${reqs[*]##*/} did not succeed (offline: make the bundle with BUNDLE_ARGS=--cuda, or set CUDA_HOME)" \
        "$CACHE/logs/cuda.log" "$PY" -m pip install --disable-pip-version-check --no-deps \
        --target "$dir" "${from[@]}" "${args[@]}"
      # The wheels ship only libX.so.N; the linker and CMake look for libX.so.
      local f
      for f in "$dir/nvidia/cu$CUDA_MAJOR"/lib/lib*.so.*; do
        [ -e "${f%%.so.*}.so" ] || ln -s "$(basename "$f")" "${f%%.so.*}.so"
      done
      touch "$dir/.complete"
    fi
    FCN_CUDA_HOME=$dir/nvidia/cu$CUDA_MAJOR
    # nvcc links cudart and cudadevrt from lib64/; the wheels put them in lib/.
    [ -e "$FCN_CUDA_HOME/lib64" ] || ln -s lib "$FCN_CUDA_HOME/lib64"
    if cudnn_build; then
      FCN_CUDNN_HOME=$dir/nvidia/cudnn
      local f
      for f in "$FCN_CUDNN_HOME"/lib/lib*.so.*; do
        [ -e "${f%%.so.*}.so" ] || ln -s "$(basename "$f")" "${f%%.so.*}.so"
      done
      export FCN_CUDNN_HOME
    fi
  fi
  if cudnn_build && [ -z "${FCN_CUDNN_HOME:-}" ]; then
    [ -f "$CUDA_HOME/include/cudnn.h" ] || die cuda "FCN_CUDNN=1 with CUDA_HOME=$CUDA_HOME, which has no include/cudnn.h; unset CUDA_HOME to use the PyPI cuDNN wheel"
    FCN_CUDNN_HOME=$CUDA_HOME
    export FCN_CUDNN_HOME
  fi
  # Native code for the GPUs present (else FCN_CUDA_ARCH, default 90: H100) plus PTX.
  local caps=
  [ -n "$smi" ] && caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d '. ' | sort -u | paste -sd';')
  FCN_CUDA_ARCHS=${FCN_CUDA_ARCH:-${caps:-90}}
  export FCN_CUDA_HOME FCN_CUDA_ARCHS
}

step_cuda() {
  if ! gpu_build; then
    say "cuda: CPU build (no NVIDIA GPU answers; FCN_GPU=1 builds for CUDA)"; return
  fi
  cuda_toolkit
  say "cuda: CUDA build for sm_$FCN_CUDA_ARCHS with $("$FCN_CUDA_HOME/bin/nvcc" --version | tail -n1) ($FCN_CUDA_HOME)${FCN_CUDNN_HOME:+, cuDNN ($FCN_CUDNN_HOME)}"
}

step_apt() {
  command -v dpkg-query >/dev/null || die apt "dpkg-query not found; this setup supports Debian 12 (install the packages listed in install/setup.sh by hand elsewhere)"
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "apt: all ${#APT_PACKAGES[@]} Debian packages present"; return; fi
  [ "$(id -u)" = 0 ] || die apt "missing Debian packages (${missing[*]}); run 'make setup' as root or 'sudo apt-get install ${missing[*]}'"
  say "apt: installing ${missing[*]}"
  local log=$CACHE/logs/apt.log
  run apt "apt-get update did not succeed; check the network or the Debian mirror and rerun" "$log" \
    env DEBIAN_FRONTEND=noninteractive apt-get update
  run apt "apt-get install did not succeed; fix the reported package problem and rerun" "$log" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# Boost.Python is built for one Python minor version; .venv must use that one.
python_tag() { "$1" -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null; }

step_venv() {
  command -v "$PYTHON" >/dev/null || die venv "no '$PYTHON' on PATH; install Python 3 or set PYTHON=/path/to/python3"
  local tag; tag=$(python_tag "$PYTHON") || die venv "'$PYTHON' does not run; set PYTHON=/path/to/python3"
  if [ -z "$OFFLINE" ] && ! ls /usr/lib/*/libboost_python"$tag".so >/dev/null 2>&1 && ! ls /usr/lib/libboost_python"$tag".so >/dev/null 2>&1; then
    local have; have=$(ls /usr/lib/*/libboost_python3*.so 2>/dev/null | sed 's/.*libboost_python//; s/\.so//' | tr '\n' ' ')
    die venv "'$PYTHON' is Python ${tag:0:1}.${tag:1} but Boost.Python is built for: ${have:-none}; set PYTHON to a matching interpreter"
  fi
  if [ -x "$PY" ] && [ "$(python_tag "$PY")" != "$tag" ]; then
    say "venv: .venv is another Python version; recreating"; rm -rf "$VENV"
  fi
  if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "venv: creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    run venv "'$PYTHON -m venv' did not succeed (on Debian: apt-get install python3-venv)" \
      "$CACHE/logs/venv.log" "$PYTHON" -m venv "$VENV"
  fi
  local want stamp=$VENV/.fcn-requirements
  want=$(sha256 "$ROOT/requirements.txt")
  if [ -n "$OFFLINE" ]; then
    bundle_dir
    want="$want $BUNDLE_DIR $(realpath "$(command -v "$PYTHON")")"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then say "venv: requirements up to date"; return; fi
  if [ -n "$OFFLINE" ]; then
    rm -f "$stamp"
    local err=$CACHE/logs/venv.err
    (cd "$ROOT" && "$PYTHON" install/bundle.py venv "$PY" "$PYTHON" "$BUNDLE_DIR" 2>"$err") ||
      die venv "$(tail -n1 "$err" | sed 's/^bundle.py: //')"
    echo "$want" >"$stamp"
    return
  fi
  say "venv: installing requirements.txt"
  rm -f "$stamp"
  run venv "pip install -r requirements.txt did not succeed; check access to PyPI and rerun" \
    "$CACHE/logs/pip.log" "$PY" -m pip install --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$want" >"$stamp"
}

# Path of the verified sdist (downloads it into the cache when needed).
sdist_path() {
  if [ -n "${FCN_CAFFE_SDIST:-}" ]; then echo "$FCN_CAFFE_SDIST"
  elif [ -n "$OFFLINE" ]; then bundle_dir; echo "$BUNDLE_DIR/sdist/$SDIST_FILE"
  else echo "$CACHE/sdist/$SDIST_FILE"; fi
}

step_sdist() {
  local f; f=$(sdist_path)
  if [ -n "${FCN_CAFFE_SDIST:-}" ]; then
    [ -e "$f" ] || die sdist "FCN_CAFFE_SDIST=$f does not exist; unset it to download $SDIST_NAME==$SDIST_VERSION from PyPI"
    [ -f "$f" ] || die sdist "FCN_CAFFE_SDIST=$f is not a file; unset it to download $SDIST_NAME==$SDIST_VERSION from PyPI"
  elif [ -n "$OFFLINE" ]; then
    [ -f "$f" ] || die sdist "the unpacked bundle lacks $f; delete $(dirname "$(dirname "$f")") and rerun"
  elif [ ! -f "$f" ]; then
    [ -x "$PY" ] || die sdist "no .venv yet; run the venv step first"
    local tmp=$CACHE/sdist/tmp.$$
    rm -rf "$tmp"; mkdir -p "$tmp"
    say "sdist: downloading $SDIST_NAME==$SDIST_VERSION from PyPI"
    run sdist "pip download of $SDIST_NAME==$SDIST_VERSION did not succeed; check access to PyPI, or set FCN_CAFFE_SDIST to a local copy" \
      "$CACHE/logs/sdist.log" "$PY" -m pip download --disable-pip-version-check --no-deps \
      --no-binary :all: "$SDIST_NAME==$SDIST_VERSION" -d "$tmp"
    [ -f "$tmp/$SDIST_FILE" ] || die sdist "pip did not produce $SDIST_FILE (got: $(ls "$tmp" | tr '\n' ' ')); check third_party/caffe/sdist.env"
    local got; got=$(sha256 "$tmp/$SDIST_FILE")
    if [ "$got" != "$SDIST_SHA256" ]; then
      rm -rf "$tmp"
      die sdist "downloaded $SDIST_FILE has sha256 $got, expected $SDIST_SHA256; the index served a different file, do not build it"
    fi
    mv -f "$tmp/$SDIST_FILE" "$f"; rm -rf "$tmp"
  fi
  local got; got=$(sha256 "$f")
  if [ "$got" != "$SDIST_SHA256" ]; then
    [ -z "${FCN_CAFFE_SDIST:-}$OFFLINE" ] && rm -f "$f"   # a corrupt cache copy is downloaded again next run
    die sdist "$f has sha256 $got, expected $SDIST_SHA256 ($SDIST_NAME==$SDIST_VERSION); use the file from PyPI"
  fi
  say "sdist: $SDIST_FILE sha256 verified"
}

# Everything that determines the build, one fact per line.
key_material() {
  echo "sdist $SDIST_SHA256"
  # every build input in third_party/caffe/ (its README is documentation, not an input)
  (cd "$CAFFE_DIR" && find . -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  echo "c++ $(c++ --version 2>/dev/null | head -n1)"
  echo "cmake $(cmake --version 2>/dev/null | head -n1)"
  if [ -n "$OFFLINE" ]; then
    # the bundle's libraries and protoc instead of the system's packages
    bundle_dir
    echo "protoc $(LD_LIBRARY_PATH=$(echo "$BUNDLE_DIR"/root/usr/lib/*-linux-gnu) "$BUNDLE_DIR/root/usr/bin/protoc" --version 2>&1)"
    "$PY" -c 'import json, sys
m = json.load(open(sys.argv[1]))
print("bundle", m["arch"], m["boost_source"]["package"], m["boost_source"]["version"])
for d in m["debian_packages"]: print("deb", d["package"], d["version"])' "$BUNDLE_DIR/MANIFEST.json"
  else
    echo "protoc $(protoc --version 2>/dev/null)"
  fi
  "$PY" - <<'EOF'
import sys, sysconfig
print("python", sys.version.split()[0], sysconfig.get_config_var("SOABI"))
for mod in ("numpy", "google.protobuf"):
    try:
        m = __import__(mod, fromlist=["__version__"])
        print(mod, m.__version__)
    except Exception as e:
        print(mod, "missing", type(e).__name__)
EOF
  if gpu_build; then
    cuda_toolkit
    echo "cuda $("$FCN_CUDA_HOME/bin/nvcc" --version | tail -n1) archs $FCN_CUDA_ARCHS cudnn $(cudnn_build && echo 1 || echo 0)"
  fi
  [ -n "$OFFLINE" ] && return
  local p
  for p in "${APT_PACKAGES[@]}"; do
    case $p in lib*-dev) echo "deb $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)";; esac
  done
}
cache_key() { key_material | sha256sum | cut -c1-16; }

step_caffe() {
  [ -x "$PY" ] || die caffe "no .venv yet; run the venv step first"
  [ -z "$OFFLINE" ] || bundle_dir
  ! gpu_build || cuda_toolkit
  local key entry
  key=$(cache_key)
  entry=$CACHE/caffe/$key
  if [ -f "$entry/.complete" ]; then
    say "caffe: build $key found in cache ($entry)"
  else
    build_caffe "$key" "$entry"
  fi
  install_caffe "$key" "$entry"
}

build_caffe() {
  local key=$1 entry=$2 sdist d pid
  mkdir -p "$CACHE/caffe"
  # Leftovers of interrupted builds (their process is gone) are never used; remove them.
  for d in "$CACHE"/caffe/*.tmp.*; do
    [ -d "$d" ] || continue
    pid=${d##*.}
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
  [ -d "$entry" ] && rm -rf "$entry"   # an entry without .complete is half-written
  sdist=$(sdist_path)
  [ -f "$sdist" ] && [ "$(sha256 "$sdist")" = "$SDIST_SHA256" ] || die caffe "no verified sdist; run the sdist step first"
  local tmp=$entry.tmp.$$ start=$SECONDS
  mkdir -p "$tmp/out"
  key_material >"$tmp/out/key.txt"
  local log=$tmp/out/build.log
  say "caffe: building $key (a few minutes on 2 cores; log: $log)"
  if ! FCN_PREFIX=$BUNDLE_DIR bash "$CAFFE_DIR/build.sh" "$sdist" "$tmp" "$tmp/out" "$PY" 2>&1 | tee "$log" | progress; then
    die caffe "compiling Caffe did not succeed: $(grep -m1 -E 'error|Error|FAILED|failed' "$log" | cut -c1-200) (log: $log)"
  fi
  rm -rf "$tmp/src" "$tmp/build"
  touch "$tmp/out/.complete"
  # Publish atomically: a concurrent build of the same key may have won; either is fine.
  mv -T "$tmp/out" "$entry" 2>/dev/null || [ -f "$entry/.complete" ] || die caffe "could not move the build into $entry"
  rm -rf "$tmp"
  say "caffe: built $key in $((SECONDS - start)) s"
}

# Condense build.sh's output to its stages and compile progress in 10% steps.
progress() {
  awk '/^build\.sh: / { print "setup: caffe:", substr($0, 11); fflush(); next }
       match($0, /^\[ *[0-9]+%\]/) { p = substr($0, RSTART + 1, RLENGTH - 3) + 0
         if (p >= last + 10) { last = p - p % 10; print "setup: caffe: compiled", p "%"; fflush() } }'
}

install_caffe() {
  local key=$1 entry=$2 site stamp=$VENV/.fcn-caffe-key
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || die caffe ".venv python does not run; delete .venv and rerun"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] && [ -f "$site/caffe/_caffe.so" ]; then
    say "caffe: installed in .venv"; return
  fi
  rm -f "$stamp"; rm -rf "$site/caffe"
  cp -r "$entry/caffe" "$site/caffe" || die caffe "could not copy $entry/caffe into $site"
  echo "$key" >"$stamp"
  say "caffe: installed $key into $site/caffe"
}

# The caffe package from a wheel 'make wheel' wrote, instead of a build.
step_wheel() {
  [ -n "${FCN_WHEEL:-}" ] || die wheel "set FCN_WHEEL to a wheel made by 'make wheel'"
  [ -x "$PY" ] || die wheel "no .venv yet; run the venv step first"
  local key stamp=$VENV/.fcn-caffe-key
  key="wheel $(sha256 "$FCN_WHEEL")"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then say "wheel: installed in .venv"; return; fi
  rm -f "$stamp"
  run wheel "pip could not install $FCN_WHEEL into .venv (a wheel for another Python or platform?)" \
    "$CACHE/logs/wheel-install.log" "$PY" -m pip install --disable-pip-version-check \
    --no-index --no-deps --force-reinstall "$FCN_WHEEL"
  echo "$key" >"$stamp"
  say "wheel: installed $(basename "$FCN_WHEEL") into .venv"
}

step_check() {
  local err
  err=$(cd / && "$PY" -c 'import caffe; caffe.layer_type_list()' 2>&1 >/dev/null) ||
    die check "'import caffe' does not work: $(echo "$err" | tail -n1); delete .venv and rerun make setup"
  say "check: import caffe works from any directory"
}

# Every variable setup reads, checked before any step: one line for a value it cannot use.
check_env() {
  if [ -e "$CACHE" ] && [ ! -d "$CACHE" ]; then
    die setup "the cache folder $CACHE is a file; remove it, or set FCN_CACHE_DIR to a folder"
  fi
  case ${FCN_GPU-unset} in unset|0|1) ;; *)
    die setup "FCN_GPU=$FCN_GPU: use FCN_GPU=1 (CUDA build), FCN_GPU=0 (CPU build) or leave it unset" ;;
  esac
  if [ -n "${FCN_CUDA_ARCH:-}" ] && ! [[ $FCN_CUDA_ARCH =~ ^[1-9][0-9]{1,2}(\;[1-9][0-9]{1,2})*$ ]]; then
    die setup "FCN_CUDA_ARCH=$FCN_CUDA_ARCH: give compute capabilities without the dot, e.g. 90 or '80;90'"
  fi
  case ${FCN_CUDNN-unset} in unset|0) ;; 1)
    [ "${FCN_GPU:-}" = 1 ] || gpu_build || die setup "FCN_CUDNN=1 is for the CUDA build: add FCN_GPU=1" ;;
    *) die setup "FCN_CUDNN=$FCN_CUDNN: use FCN_CUDNN=1 (CUDA build with cuDNN 9) or leave it unset" ;;
  esac
  if [ -n "${FCN_WHEEL:-}" ] && [ ! -f "$FCN_WHEEL" ]; then
    die wheel "FCN_WHEEL=$FCN_WHEEL: no such file; make one with 'make wheel'"
  fi
  if [ -n "${FCN_BUNDLE:-}" ] && [ ! -f "$FCN_BUNDLE" ]; then
    die bundle "FCN_BUNDLE=$FCN_BUNDLE: no such file"
  fi
  if [ -n "${CUDA_HOME:-}" ] && gpu_build && [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    die cuda "CUDA_HOME=$CUDA_HOME has no bin/nvcc; point it at a CUDA toolkit or unset it to use the PyPI wheels"
  fi
}

main() {
  local steps=("$@") s start=$SECONDS
  check_env
  if [ ${#steps[@]} -eq 0 ]; then
    if [ -n "${FCN_WHEEL:-}" ]; then steps=(venv wheel check)
    elif [ -n "$OFFLINE" ]; then steps=(bundle venv sdist cuda caffe check)
    else steps=(apt venv sdist cuda caffe check); fi
  fi
  if [ "${steps[0]}" = key ]; then cache_key; return; fi
  if [ "${steps[0]}" = sdist-path ]; then sdist_path; return; fi
  for s in "${steps[@]}"; do
    case $s in
      apt|bundle|venv|sdist|cuda|caffe|wheel|check) "step_$s" ;;
      *) die setup "unknown step '$s'; steps are: apt bundle venv sdist cuda caffe wheel check key sdist-path" ;;
    esac
  done
  say "done in $((SECONDS - start)) s"
}

main "$@"

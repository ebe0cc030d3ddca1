#!/usr/bin/env bash
# make setup: everything the project needs on a fresh Debian 12 machine.
#
#   scripts/setup.sh            all steps: apt venv sdist caffe check
#   scripts/setup.sh STEP...    only those steps (in the order given)
#   scripts/setup.sh key        print the Caffe build cache key and exit
#
# Idempotent: every step checks what is there and does only what is missing.
# A failed step prints one line "setup: STEP failed: WHAT TO DO" and exits 1;
# rerunning continues from where it stopped.
#
# Environment:
#   PYTHON           interpreter for .venv (default python3; must match Boost.Python)
#   FCN_CACHE_DIR    build cache (default ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe)
#   FCN_CAFFE_SDIST  use this sdist file instead of downloading it (still hash-checked)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAFFE_DIR=$ROOT/third_party/caffe
VENV=$ROOT/.venv
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

step_apt() {
  command -v dpkg-query >/dev/null || die apt "dpkg-query not found; this setup supports Debian 12 (install the packages listed in scripts/setup.sh by hand elsewhere)"
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
  if ! ls /usr/lib/*/libboost_python"$tag".so >/dev/null 2>&1 && ! ls /usr/lib/libboost_python"$tag".so >/dev/null 2>&1; then
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
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then say "venv: requirements up to date"; return; fi
  say "venv: installing requirements.txt"
  rm -f "$stamp"
  run venv "pip install -r requirements.txt did not succeed; check access to PyPI and rerun" \
    "$CACHE/logs/pip.log" "$PY" -m pip install --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$want" >"$stamp"
}

# Path of the verified sdist (downloads it into the cache when needed).
sdist_path() {
  if [ -n "${FCN_CAFFE_SDIST:-}" ]; then echo "$FCN_CAFFE_SDIST"; else echo "$CACHE/sdist/$SDIST_FILE"; fi
}

step_sdist() {
  local f; f=$(sdist_path)
  if [ -n "${FCN_CAFFE_SDIST:-}" ]; then
    [ -f "$f" ] || die sdist "FCN_CAFFE_SDIST=$f does not exist; unset it to download $SDIST_NAME==$SDIST_VERSION from PyPI"
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
    [ -z "${FCN_CAFFE_SDIST:-}" ] && rm -f "$f"   # a corrupt cache copy is downloaded again next run
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
  echo "protoc $(protoc --version 2>/dev/null)"
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
  local p
  for p in "${APT_PACKAGES[@]}"; do
    case $p in lib*-dev) echo "deb $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)";; esac
  done
}
cache_key() { key_material | sha256sum | cut -c1-16; }

step_caffe() {
  [ -x "$PY" ] || die caffe "no .venv yet; run the venv step first"
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
  if ! bash "$CAFFE_DIR/build.sh" "$sdist" "$tmp" "$tmp/out" "$PY" 2>&1 | tee "$log" | progress; then
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

step_check() {
  local err
  err=$(cd / && "$PY" -c 'import caffe; caffe.layer_type_list()' 2>&1 >/dev/null) ||
    die check "'import caffe' does not work: $(echo "$err" | tail -n1); delete .venv and rerun make setup"
  say "check: import caffe works from any directory"
}

main() {
  local steps=("$@") s start=$SECONDS
  [ ${#steps[@]} -gt 0 ] || steps=(apt venv sdist caffe check)
  if [ "${steps[0]}" = key ]; then cache_key; return; fi
  for s in "${steps[@]}"; do
    case $s in
      apt|venv|sdist|caffe|check) "step_$s" ;;
      *) die setup "unknown step '$s'; steps are: apt venv sdist caffe check key" ;;
    esac
  done
  say "done in $((SECONDS - start)) s"
}

main "$@"

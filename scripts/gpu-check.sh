#!/usr/bin/env bash
# The GPU check (docs/gpu.md), on a machine with an NVIDIA GPU, no network, Python 3.12
# and numpy/scipy/pillow/protobuf/pytest/torch installed: for each CUDA wheel of Caffe
# (default: out/wheels/*cuda*.whl; the cuDNN build too when its wheel is there) a venv
# that sees the system's packages, the wheel installed with pip --no-index, then
# scripts/gpu_check.py: GPU against CPU on every deploy net, SGD steps, PyTorch's speed
# on the same GPU, memory; within 8 minutes in all. $OUT (else out/gpu-check/) gets
# gpu-check.json (every build's results) and gpu-check.log; the last lines say which
# build was faster.
#
#   bash scripts/gpu-check.sh [WHEEL...]
#
# Data the check reads travels with the working tree: out/gpu-check-data, made here by
# `python scripts/gpu_check.py --prepare out/gpu-check-data` (needs ../shared).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/out/gpu-check}
PY=${PYTHON:-python3}
DATA=$ROOT/out/gpu-check-data
die() { echo "gpu-check.sh: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 ||
  die "no NVIDIA GPU answers nvidia-smi here; run it on a machine with one (make test checks the CPU build)"
command -v "$PY" >/dev/null || die "no '$PY' on PATH; set PYTHON=/path/to/python3"
[ -f "$DATA/voc-demo/image.jpg" ] ||
  die "$DATA is missing; make it where ../shared is: $PY scripts/gpu_check.py --prepare $DATA"
wheels=("$@")
[ ${#wheels[@]} -gt 0 ] || mapfile -t wheels < <(ls "$ROOT"/out/wheels/*cuda*.whl 2>/dev/null)
[ ${#wheels[@]} -gt 0 ] || die "no CUDA wheel in out/wheels/; make one with 'FCN_GPU=1 make wheel' (docs/gpu.md)"
mkdir -p "$OUT"
log=$OUT/gpu-check.log
: >"$log"
{ echo "gpu-check.sh $(date -u +%FT%TZ)"; nvidia-smi; "$PY" --version; } >>"$log" 2>&1

status=0
for whl in "${wheels[@]}"; do
  [ -f "$whl" ] || die "$whl: no such wheel"
  tag=$(basename "$whl" .whl)
  venv=$(mktemp -d)/venv
  echo "== $tag" | tee -a "$log"
  "$PY" -m venv --system-site-packages "$venv" >>"$log" 2>&1 || die "$PY -m venv failed (log: $log)"
  # $PY may itself be a venv (PyTorch's): its packages are not the system's, so a .pth
  # file puts them on the new venv's path too, after its own
  "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' \
    >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fcn-target.pth"
  "$venv/bin/python" -m pip install -q --no-index --no-deps --disable-pip-version-check "$whl" \
    >>"$log" 2>&1 || die "pip could not install $whl (log: $log)"
  (cd / && "$venv/bin/python" -c 'import caffe, json; print("import caffe:", caffe.__file__)') \
    2>&1 | tee -a "$log"
  PYTHONUNBUFFERED=1 timeout $((460 / ${#wheels[@]})) "$venv/bin/python" "$ROOT/scripts/gpu_check.py" \
    --data "$DATA" --out "$OUT" --tag "$tag" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
"$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$log"
import json, pathlib, sys
rows, runs = [], {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("gpu-check-*.json")):
    r = runs[p.stem[len("gpu-check-"):]] = json.loads(p.read_text())
    s = r.get("speed", {})
    f8 = s.get("fcn8s_forward", {}).get("caffe_s")
    f32 = s.get("fcn32s_sgd_iteration", {}).get("caffe_s")
    rows.append((r["tag"], r.get("passed"), f8, f32))
    print(f"{r['tag']}: {'passed' if r.get('passed') else 'FAILED'}; FCN-8s forward {f8} s, "
          f"FCN-32s SGD iteration {f32} s")
timed = [r for r in rows if r[2]]
faster = min(timed, key=lambda r: r[2])[0] if len(timed) > 1 else None
if faster:
    print(f"faster FCN-8s forward: {faster}")
out = pathlib.Path(sys.argv[1]) / "gpu-check.json"
out.write_text(json.dumps({"builds": runs, "faster_fcn8s_forward": faster,
                           "passed": bool(rows) and all(r[1] for r in rows)}, indent=1) + "\n")
for p in pathlib.Path(sys.argv[1]).glob("gpu-check-*.json"):
    p.unlink()
print(f"results: {out}")
EOF
exit $status

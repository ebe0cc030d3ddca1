#!/usr/bin/env bash
# The GPU check's one command on a lent GPU machine (docs/gpu.md), run from the repo
# root with out/gpu-pack carried (make gpu-rehearsal makes it and prints the command):
#
#   bash scripts/gpu-check.sh [gpu_check.py options]
#
# It needs only the machine's python3 (or $PYTHON); scripts/gpu_check.py checks the
# rest, one line each, and writes $OUT/gpu-check.json and $OUT/gpu-check.log (OUT
# defaults to out/gpu-check). Nothing else is written outside /tmp. Should Python
# itself fail, the JSON still says why. Exit 0 passed, 1 failed, 2 could not start.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OUT=${OUT:-$ROOT/out/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT" || { echo "gpu-check.sh: cannot make $OUT" >&2; exit 2; }
fallback() {   # the JSON when gpu_check.py could not write one: $1 the reason
  printf '{"passed": false, "complete": false, "reason": "%s"}\n' \
    "$(printf '%s' "$1" | tr -d '"\\' | tr '\n' ' ')" >"$OUT/gpu-check.json"
}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu-check.sh: no '$PY' on PATH; set PYTHON=/path/to/python3" >&2
  fallback "no '$PY' on PATH"
  exit 2
fi
rm -f "$OUT/gpu-check.json"
PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 "$PY" "$ROOT/scripts/gpu_check.py" "$@"
rc=$?
[ -s "$OUT/gpu-check.json" ] || fallback "scripts/gpu_check.py ended with exit $rc before writing its results (see gpu-check.log)"
exit $rc

"""The GPU check, as it runs on a lent GPU machine (docs/gpu.md): what
scripts/gpu-check.sh starts. Standard library only, so that it runs whatever the
machine's Python lacks, and says so.

    python3 scripts/gpu_check.py [--out DIR] [--pack DIR] [--budget S]
                                 [--models A,B] [--parts P,Q] [WHEEL...]

1. Preflight, one line each: the GPU (nvidia-smi), the driver's CUDA against the
   wheels', the Python and the wheels made for it, six, numpy, protobuf and the
   rest Caffe imports, and PyTorch's view of the GPU.
2. For each wheel in the pack (default out/gpu-pack/wheels: the CUDA build first,
   the cuDNN build only if the time left fits it): installed with pip --target
   into a temporary folder put on PYTHONPATH, `import caffe` tried, then the
   parts of scripts/gpu_parts.py, each net and each part in a process of its own
   (a Caffe abort loses one net), each with a time limit. A wheel pip refuses or
   that does not import is recorded with its reason, and the check goes on.
3. $OUT/gpu-check.json (rewritten after every step: a run cut short keeps what it
   measured) and $OUT/gpu-check.log; nothing else is written outside /tmp.

`passed` is true only when every wheel checked ran every part to its end and
every comparison held. Exit 0 passed, 1 failed, 2 could not start (no GPU, no
wheel, no data: one line, and the JSON says why).

Environment: $OUT (the results folder, when --out is not given);
$FCN_GPU_CHECK_STAND_IN=cpu makes the CPU stand in for the GPU (the rehearsal and
the tests: no GPU needed, no time budget, small sizes for speed);
$FCN_GPU_CHECK_FAULT plants faults (tests; scripts/gpu_parts.py).
"""
import argparse
import collections
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("deploy", "sgd", "memory", "speed")
SGD_MODELS = ("voc-fcn32s", "camvid-fcn8s-squeezenet")
BUDGET_S = 420                 # the whole run on a GPU machine: well inside 8 minutes
# Each child's limit in seconds on a GPU (deploy: per net; sgd: per model), and with
# the CPU standing in (2 cores, every net at full size).
LIMITS = {"deploy": (90, 900), "sgd": (150, 1200), "memory": (150, 900),
          "speed": (240, 1200)}
ORDER = {"cu130": 0, "cu130.cudnn9": 1}   # the CUDA build first, cuDNN's if time is left

# What the machine's Python must hold for Caffe and the check (import name, distribution).
PACKAGES = [("six", "six"), ("numpy", "numpy"), ("google.protobuf", "protobuf"),
            ("scipy", "scipy"), ("PIL", "pillow"), ("skimage", "scikit-image"),
            ("torch", "torch")]
PACKAGES_PROBE = r'''
import importlib, importlib.metadata as md, json, sys
out = {}
for mod, dist in %r:
    try:
        m = importlib.import_module(mod)
        out[dist] = {"version": md.version(dist)}
        if dist == "torch":
            ok = m.cuda.is_available()
            out[dist].update(cuda=m.version.cuda, sees_gpu=ok,
                             gpu=m.cuda.get_device_name(0) if ok else None)
    except Exception as e:
        out[dist] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
''' % (PACKAGES,)
IMPORT_PROBE = r'''
import ctypes, json, os
import caffe
info = {"caffe": os.path.dirname(caffe.__file__)}
try:
    info["build"] = json.load(open(os.path.join(info["caffe"], "fcn_build.json")))
except Exception as e:
    info["build"] = f"{type(e).__name__}: {e}"
libs = {}
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    base = os.path.basename(path)
    for name in ("libcudart.so", "libcublas.so", "libcublasLt.so", "libcurand.so",
                 "libcudnn.so", "libcuda.so"):
        if base.startswith(name):
            libs[name[:-3]] = path
info["cuda_libraries"] = libs
if "libcudart" in libs:
    v = ctypes.c_int()
    ctypes.CDLL(libs["libcudart"]).cudaRuntimeGetVersion(ctypes.byref(v))
    info["cudart_version"] = v.value
print(json.dumps(info))
'''


class Stop(Exception):
    """The run cannot start: one line, exit 2."""


class Log:
    """Lines to stdout and to $OUT/gpu-check.log."""

    def __init__(self, path):
        self.file = open(path, "w", buffering=1, encoding="utf-8", errors="replace")

    def __call__(self, line, quiet=False):
        self.file.write(line.rstrip("\n") + "\n")
        if not quiet:
            print(line.rstrip("\n"), flush=True)


class Run:
    """The whole check: its JSON, rewritten after every step."""

    def __init__(self, out, stand_in):
        self.out = out
        self.log = Log(out / "gpu-check.log")
        self.t0 = time.time()
        self.data = {"passed": False, "complete": False, "reason": "running",
                     "stand_in": stand_in, "started": stamp(), "preflight": {},
                     "builds": {}, "failures": []}
        self.write()

    def write(self):
        self.data["seconds"] = round(time.time() - self.t0, 1)
        tmp = self.out / ".gpu-check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.out / "gpu-check.json")

    def check(self, what, ok, line, **fields):
        """One preflight line and its record."""
        self.data["preflight"][what] = {"ok": ok, "line": line, **fields}
        self.log(f"preflight: {what}: {line}" + ("" if ok else "  <- PROBLEM"))
        self.write()


def stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def last_error(lines):
    """The line that says why a process failed: glog's fatal line, else a Python
    exception's last line, else the last line."""
    lines = [l.strip() for l in lines if l.strip()]
    fatal = [l for l in lines if re.match(r"F\d{4} ", l) or "Check failed" in l]
    if fatal:
        return fatal[-1][:400]
    exc = [l for l in lines if re.match(r"[A-Za-z_.]*(Error|Exception|Interrupt)\b", l)]
    return (exc or lines or ["(no output)"])[-1][:400]


def run_child(cmd, env, timeout, log, prefix="  "):
    """Run cmd in its own process group, its output into the log as it comes;
    (exit code or None when killed at its limit, a reason when it did not exit 0)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         cwd="/", text=True, errors="replace", start_new_session=True)
    tail = collections.deque(maxlen=60)

    def pump():
        for line in p.stdout:
            tail.append(line)
            log(prefix + line)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        reader.join(5)
        return None, f"killed at its time limit ({timeout:.0f} s)"
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    reader.join(5)
    if rc == 0:
        return 0, None
    how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    return rc, f"{how}: {last_error(tail)}"


# ---------------------------------------------------------------------------
# Preflight


def wheel_info(path):
    """(local version tag, python tag) of one of install/wheel.py's wheels."""
    parts = path.name[:-4].split("-")
    if len(parts) < 5 or not parts[0] == "fcn_caffe":
        return None, None
    return parts[1].partition("+")[2], parts[2]


def cuda_of(local):
    """(major, minor) of CUDA a wheel's local tag names (cu130 -> (13, 0)), or None."""
    m = re.match(r"cu(\d+)(\d)(\.|$)", local or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def smi(*args):
    """nvidia-smi's answer: (the first line, None) or (None, why not)."""
    try:
        r = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi did not answer: {e}"
    rows = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not rows:
        return None, f"nvidia-smi: {(r.stderr or r.stdout).strip()[:200] or 'no GPU listed'}"
    return rows[0], None


def gpu_line():
    """(name, driver, memory MiB, compute capability or '?') of GPU 0 from nvidia-smi,
    or a reason why none answers."""
    if not shutil.which("nvidia-smi"):
        return None, "no nvidia-smi on PATH"
    row, why = smi("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,"
                   "nounits")
    if row is None:
        return None, why
    cap, _ = smi("--query-gpu=compute_cap", "--format=csv,noheader")   # (newer drivers)
    mode, _ = smi("--query-gpu=compute_mode", "--format=csv,noheader")
    return [f.strip() for f in row.split(",")] + [cap or "?", mode or "?"], None


def driver_cuda():
    """The CUDA version the driver supports (libcuda's cuDriverGetVersion), or None."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return None
    return v.value // 1000, (v.value % 1000) // 10


def preflight(run, wheels, stand_in, py_env):
    """Every check that can fail before anything runs, one line each. Returns the
    wheels to try, in order; raises Stop when nothing can run."""
    data = run.data
    gpu, why = gpu_line()
    if gpu:
        run.check("gpu", True, f"{gpu[0]}, driver {gpu[1]}, {gpu[2]} MiB, compute capability "
                  f"{gpu[3]}, compute mode {gpu[4]}", name=gpu[0], driver=gpu[1],
                  memory_mib=gpu[2], compute_cap=gpu[3], compute_mode=gpu[4])
    elif stand_in:
        run.check("gpu", True, f"none ({why}); the CPU stands in for it", name=None)
    else:
        run.check("gpu", False, why, name=None)
        raise Stop(f"no NVIDIA GPU answers here ({why}); run it on a machine with one, or "
                   "rehearse it with the CPU standing in: make gpu-rehearsal")
    drv = driver_cuda()
    need = max((cuda_of(wheel_info(w)[0]) for w in wheels if cuda_of(wheel_info(w)[0])),
               default=None)
    if drv is None:
        run.check("driver", stand_in, "no CUDA driver (libcuda.so.1)" +
                  ("; the CPU stands in" if stand_in else ""), cuda=None)
    else:
        ok = need is None or drv >= need
        run.check("driver", ok, f"supports CUDA {drv[0]}.{drv[1]}" + (
            f"; the wheels need {need[0]}.{need[1]}" if need else ""), cuda=list(drv))
    pytag = "cp%d%d" % sys.version_info[:2]
    mine = [w for w in wheels if wheel_info(w)[1] == pytag]
    others = sorted({wheel_info(w)[1] for w in wheels} - {pytag})
    run.check("python", bool(mine), f"{platform.python_version()} ({sys.executable}); "
              f"{len(mine)} wheel(s) for {pytag}" + (
                  f"; not for this Python: {', '.join(map(str, others))}" if others else ""),
              version=platform.python_version(), executable=sys.executable)
    try:
        r = subprocess.run([sys.executable, "-c", PACKAGES_PROBE], capture_output=True,
                           text=True, timeout=300, env=py_env, cwd="/")
        found = json.loads(r.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        found = {}
        run.check("packages", False, "their imports did not end in 300 s")
    except (ValueError, IndexError):
        found = {}
        run.check("packages", False, f"could not be listed: {last_error(r.stderr.splitlines())}")
    for _, dist in PACKAGES:
        info = found.get(dist)
        if info is None:
            continue
        if "error" in info:
            run.check(dist, False, info["error"], **info)
        elif dist == "torch":
            sees = info.get("sees_gpu")
            run.check(dist, bool(sees) or stand_in, f"{info['version']} (CUDA {info.get('cuda')}) "
                      + (f"sees {info['gpu']}" if sees else "sees no GPU: Caffe is timed alone"),
                      **info)
        else:
            run.check(dist, True, info["version"], **info)
    data["wheels"] = [w.name for w in wheels]
    if not mine:
        raise Stop(f"no wheel for Python {platform.python_version()} ({pytag}) among "
                   f"{len(wheels)} in the pack; make them with make gpu-rehearsal")
    order = []
    for w in sorted(mine, key=lambda w: (ORDER.get(wheel_info(w)[0], 9), w.name)):
        local = wheel_info(w)[0]
        if not cuda_of(local) and not stand_in:
            data["builds"][local] = {"wheel": w.name, "checked": False,
                                     "reason": "a CPU build: nothing to check on a GPU"}
            continue
        order.append(w)
    run.write()
    return order


# ---------------------------------------------------------------------------
# One build


def install(wheel, target, log):
    """The wheel into ``target`` with pip --target (no index, no dependencies), or,
    where this Python has no pip, unpacked as pip would: (how, None) or (None, why)."""
    target.mkdir(parents=True)
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"],
                             capture_output=True).returncode == 0
    if has_pip:
        rc, why = run_child([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                             "--no-deps", "--no-compile", "--disable-pip-version-check",
                             "--target", str(target), str(wheel)], os.environ, 300, log)
        return ("pip --target", None) if rc == 0 else (None, f"pip refused it: {why}")
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    except (OSError, zipfile.BadZipFile) as e:
        return None, f"could not unpack it: {e}"
    return "unpacked (this Python has no pip)", None


class Build:
    """One wheel's check: install, import, parts."""

    def __init__(self, run, wheel, args, tmp, deadline, stand_in):
        self.run, self.wheel, self.args, self.deadline = run, wheel, args, deadline
        self.stand_in = stand_in
        self.tag = wheel_info(wheel)[0]
        self.tmp = tmp / self.tag
        self.rec = run.data["builds"][self.tag] = {
            "wheel": wheel.name, "checked": True, "passed": False, "complete": False,
            "started": stamp(), "failures": [], "not_run": [], "seconds": {}}
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(self.tmp / "site"), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1", "GLOG_minloglevel": "2", "MPLBACKEND": "Agg"}

    def fail(self, what):
        self.rec["failures"].append(what)
        self.run.data["failures"].append(f"{self.tag}: {what}")
        self.run.log(f"FAIL {self.tag}: {what}")
        self.run.write()

    def left(self):
        return None if self.deadline is None else self.deadline - time.time()

    def child(self, part, model=None):
        """One child process of gpu_parts.py: (its result or {}, why it failed or None)."""
        limit = LIMITS[part][1 if self.stand_in else 0]
        left = self.left()
        if left is not None and left < 5:
            return None, "not run: the time budget ran out"
        if left is not None:
            limit = min(limit, left)
        result = self.tmp / f"{part}-{model or 'all'}.json"
        cmd = [sys.executable, str(ROOT / "scripts/gpu_parts.py"), part, "--data",
               str(self.args.pack / "data"), "--result", str(result)]
        cmd += ["--model", model] if model else []
        cmd += ["--stand-in"] if self.stand_in else []
        rc, why = run_child(cmd, self.env, limit, self.run.log)
        if rc is None and limit < LIMITS[part][1 if self.stand_in else 0]:
            why = "not run to its end: the time budget ran out"
        try:
            got = json.loads(result.read_text())
        except (OSError, ValueError):
            got = {}
        for f in got.get("failures", []):
            self.fail(f)
        if why is None and not got.get("done"):
            why = "ended without finishing"
        return got, why

    def go(self):
        t0 = time.time()
        log = self.run.log
        log(f"== {self.tag}: {self.wheel.name}")
        how, why = install(self.wheel, self.tmp / "site", log)
        self.rec["install"] = how or why
        if why:
            return self.fail(f"install: {why}")
        try:
            probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True,
                                   text=True, env=self.env, cwd="/", timeout=300)
        except subprocess.TimeoutExpired:
            self.rec["import"] = {"ok": False, "error": "import caffe did not end in 300 s"}
            return self.fail(f"import caffe: {self.rec['import']['error']}")
        try:
            info = json.loads(probe.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            rc = probe.returncode
            how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
            self.rec["import"] = {"ok": False, "error": f"{how}: "
                                  f"{last_error(probe.stderr.splitlines())}"}
            return self.fail(f"import caffe: {self.rec['import']['error']}")
        self.rec["import"] = {"ok": True, **info}
        cudart = info.get("cudart_version")
        log(f"{self.tag}: import caffe: {info['caffe']}" + (
            f"; CUDA runtime {cudart // 1000}.{cudart % 1000 // 10} from "
            f"{info['cuda_libraries']['libcudart']}" if cudart else ""))
        if not info["caffe"].startswith(str(self.tmp)):
            self.fail(f"import caffe found {info['caffe']}, not the wheel's copy")
        if self.stand_in and isinstance(info.get("build"), dict) and info["build"].get("cudnn"):
            self.rec.update(checked="import only", complete=True,
                            passed=not self.rec["failures"], reason="cuDNN's layers need a GPU: "
                            "with the CPU standing in, this build is installed and imported only")
            log(f"{self.tag}: {self.rec['reason']}")
            self.run.write()
            return
        self.run.write()
        for part in self.args.parts:
            t = time.time()
            if part in ("deploy", "sgd"):
                rows = self.rec[part] = []
                for model in (self.args.models if part == "deploy" else self.args.sgd_models):
                    got, why = self.child(part, model)
                    if got is None:
                        self.rec["not_run"].append(f"{part} {model}: {why}")
                        continue
                    if "row" in got:
                        rows.append(got["row"])
                    if why:
                        rows.append({"model": model, "crashed": why})
                        self.fail(f"{part} {model}: {why}")
                    self.run.write()
            else:
                got, why = self.child(part)
                if got is None:
                    self.rec["not_run"].append(f"{part}: {why}")
                else:
                    self.rec[part] = {k: v for k, v in got.items()
                                      if k not in ("failures", "done", "part", "model", "pid", "python")}
                    if why:
                        self.rec[part]["crashed"] = why
                        self.fail(f"{part}: {why}")
            self.rec["seconds"][part] = round(time.time() - t, 1)
            self.run.write()
        self.rec["complete"] = not self.rec["not_run"]
        self.rec["passed"] = self.rec["complete"] and not self.rec["failures"]
        self.rec["seconds"]["all"] = round(time.time() - t0, 1)
        self.run.write()


def summary(tag, rec):
    """One line of what a build measured."""
    if not rec.get("checked", True):
        return f"{tag}: not checked ({rec['reason']})"
    parts = [f"{tag}: {'passed' if rec.get('passed') else 'FAILED'}"]
    if "deploy" in rec:
        ok = sum(1 for r in rec["deploy"] if "crashed" not in r)
        parts.append(f"{ok} deploy nets")
    if "sgd" in rec:
        parts.append(f"{sum(1 for r in rec['sgd'] if 'crashed' not in r)} SGD runs")
    speed = rec.get("speed", {})
    for key, what in (("fcn8s_forward", "FCN-8s forward"),
                      ("fcn32s_sgd_iteration", "FCN-32s SGD iteration")):
        s = speed.get(key)
        if s and "caffe_s" in s:
            parts.append(f"{what} Caffe {s['caffe_s'] * 1e3:.1f} ms" + (
                f", PyTorch {s['torch_s'] * 1e3:.1f} ms" if "torch_s" in s else ""))
    if rec.get("not_run"):
        parts.append(f"not run: {'; '.join(rec['not_run'])}")
    return "; ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("wheels", nargs="*", type=Path, help="wheels (default: the pack's)")
    p.add_argument("--out", type=Path, help="results folder (default $OUT, else out/gpu-check)")
    p.add_argument("--pack", type=Path, default=ROOT / "out/gpu-pack",
                   help="the folder make gpu-rehearsal fills: wheels/ and data/")
    p.add_argument("--budget", type=float, help=f"seconds for the whole run (default "
                   f"{BUDGET_S} on a GPU, none with the CPU standing in)")
    p.add_argument("--models", help="deploy nets (comma-separated; default every one)")
    p.add_argument("--sgd-models", default=",".join(SGD_MODELS),
                   help="the nets the sgd part trains (default: %(default)s)")
    p.add_argument("--parts", default=",".join(PARTS), help="parts to run (default: all)")
    args = p.parse_args(argv)
    out = (args.out or Path(os.environ.get("OUT") or ROOT / "out/gpu-check")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stand_in = os.environ.get("FCN_GPU_CHECK_STAND_IN") or None
    if stand_in not in (None, "cpu"):
        print(f"gpu_check.py: $FCN_GPU_CHECK_STAND_IN is {stand_in!r}; it can only be 'cpu'",
              file=sys.stderr)
        return 2
    run = Run(out, stand_in)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    code = 1
    try:
        args.pack = args.pack.resolve()
        args.parts = args.parts.split(",")
        bad = sorted(set(args.parts) - set(PARTS))
        if bad:
            raise Stop(f"--parts: unknown {', '.join(bad)}; parts: {', '.join(PARTS)}")
        known = sorted(d.name for d in ROOT.iterdir() if (d / "deploy.prototxt").is_file())
        args.models = args.models.split(",") if args.models else known
        args.sgd_models = args.sgd_models.split(",")
        bad = [m for m in args.models + args.sgd_models if m not in known]
        if bad:
            raise Stop(f"--models/--sgd-models: unknown {', '.join(bad)}")
        if not (args.pack / "data/voc-demo/image.jpg").is_file():
            raise Stop(f"{args.pack}/data is not there or incomplete; it is made where "
                       "../shared is (make gpu-rehearsal) and carried to the machine")
        wheels = [w.resolve() for w in args.wheels] or sorted((args.pack / "wheels").glob("*.whl"))
        missing = [str(w) for w in wheels if not w.is_file()]
        if missing or not wheels:
            raise Stop(f"no such wheel: {', '.join(missing)}" if missing else
                       f"no wheel in {args.pack / 'wheels'}; make gpu-rehearsal puts them there")
        budget = args.budget if args.budget is not None else None if stand_in else BUDGET_S
        run.data["budget_s"] = budget
        run.log(f"gpu-check {stamp()}: {len(wheels)} wheel(s), parts {','.join(args.parts)}, "
                f"{len(args.models)} deploy nets" + (f", budget {budget:.0f} s" if budget else "")
                + ("; THE CPU STANDS IN FOR THE GPU" if stand_in else ""))
        order = preflight(run, wheels, stand_in, {**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = None if not budget else run.t0 + budget
        took = None
        for i, wheel in enumerate(order):
            tag = wheel_info(wheel)[0]
            left = None if deadline is None else deadline - time.time()
            if i and left is not None and took is not None and left < 1.2 * took:
                run.data["builds"][tag] = {
                    "wheel": wheel.name, "checked": False, "reason":
                    f"not enough time left ({left:.0f} s; the build before took {took:.0f} s)"}
                run.log(f"{tag}: not checked, {run.data['builds'][tag]['reason']}")
                continue
            t = time.time()
            Build(run, wheel, args, tmp, deadline, stand_in).go()
            took = time.time() - t
        checked = [r for r in run.data["builds"].values() if r.get("checked", True)]
        run.data["complete"] = bool(checked) and all(r["complete"] for r in checked)
        run.data["passed"] = run.data["complete"] and all(r["passed"] for r in checked)
        run.data["reason"] = "passed" if run.data["passed"] else "; ".join(
            run.data["failures"][:5] or [f"incomplete: {'; '.join(r.get('not_run', []))}"
                                         for r in checked if not r["complete"]][:1]
            or ["no build was checked"])
        code = 0 if run.data["passed"] else 1
    except Stop as e:
        run.data["reason"] = str(e)
        print(f"gpu-check: {e}", file=sys.stderr)
        run.log(f"gpu-check: {e}", quiet=True)
        code = 2
    except KeyboardInterrupt:
        run.data["reason"] = "interrupted (SIGTERM or Ctrl-C); the JSON holds what was measured"
        run.log(f"gpu-check: {run.data['reason']}")
        code = 130
    except Exception as e:     # a fault of this script: said in the JSON, not lost
        run.data["reason"] = f"gpu_check.py failed: {type(e).__name__}: {e}"
        run.log(f"gpu-check: {run.data['reason']}")
        raise
    finally:
        run.data["finished"] = stamp()
        run.write()
        shutil.rmtree(tmp, ignore_errors=True)
    if code in (0, 1):
        for tag, rec in run.data["builds"].items():
            run.log(summary(tag, rec))
        run.log(f"gpu-check: {'passed' if code == 0 else 'FAILED: ' + run.data['reason']} "
                f"({out / 'gpu-check.json'})")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""make gpu-rehearsal: the GPU check rehearsed on this machine exactly as a lent GPU
machine will run it, so that its one run is not wasted (docs/gpu.md).

    python scripts/gpu_rehearsal.py [--python python3.12] [--no-cudnn]
        [--wheel WHEEL ...] [--pack DIR] [--small] [--models A,B]
        [--machine-python PY] [--steps wheels,pack,run]

Steps:
  wheels  the CUDA wheel of Caffe for the GPU machine's Python (3.12), and the cuDNN
          one (install/wheel.sh, the build cache making reruns fast; the offline
          bundle first, for Boost.Python) -> out/gpu-pack/wheels/
  pack    the check's data from ../shared -> out/gpu-pack/data/
  run     what travels to the machine (tracked and untracked-not-ignored files, and
          the carried path out/gpu-pack; nothing from ../shared, the build cache or
          .venv), its size against the 64 MiB limit, copied into a fresh folder; there,
          with no network (unshare -n), a Python holding only what the GPU machine
          has (install/gpu-machine.txt: its torch, numpy, protobuf and the nvidia-*
          CUDA 13 wheels, in a venv in the build cache), no FCN_* variables and the CPU
          standing in for the GPU, the device command, to its end; then its
          gpu-check.json must say passed with every part filled, $OUT must hold what
          the device tool returns (at most 8 files, 2 folders deep, plain names) and
          nothing may have been written outside $OUT (kept in out/gpu-rehearsal/)

The last line: "gpu rehearsal: passed; carry: PATHS (N MiB); device command: CMD",
exit 0; else "gpu rehearsal: STEP failed: WHY", exit 1 (2: a wrong argument).

--wheel, --small, --models, --sgd-models and --machine-python are for the tests: a
given wheel (the CPU build's will do), small images, two nets, one SGD run,
another Python.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import scipy.io  # noqa: E402
from PIL import Image  # noqa: E402

from fcn import cli  # noqa: E402
from fcn.initial import squeezenet_fcn  # noqa: E402
from fcn.errors import FcnError, UserError
from fcn.paths import SHARED_DATA, cache_dir  # noqa: E402

PACK = REPO / "out/gpu-pack"
DEVICE_COMMAND = "bash scripts/gpu-check.sh"
TRAVEL_LIMIT = 64 << 20            # what a device call carries: the tree and the carried paths
OUT_FILES, OUT_DEPTH = 8, 2        # what comes back from $OUT
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MACHINE_REQUIREMENTS = REPO / "install/gpu-machine.txt"


class Failed(FcnError):
    """A step of the rehearsal failed: 'gpu rehearsal: STEP failed: WHY'."""

    def __init__(self, step, why):
        super().__init__(f"{step} failed: {why}")


def say(msg):
    print(f"gpu rehearsal: {msg}", flush=True)


def mib(n):
    return f"{n / 2 ** 20:.1f} MiB"


# ---------------------------------------------------------------------------
# wheels


def find_python(name):
    """The interpreter ``name`` (python3.12) as a path that runs: from PATH, else from
    pyenv's versions (whose shim refuses a version that is not selected)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    version = name.replace("python", "")
    for cand in [shutil.which(name)] + sorted(root.glob(f"versions/{version}*/bin/{name}")):
        if not cand:
            continue
        r = subprocess.run([str(cand), "-c", "import sys; print(sys.executable)"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    raise Failed("wheels", f"no '{name}' runs here (the GPU machine's Python is 3.12); give "
                 "--python PATH")


def make_wheels(python, cudnn):
    """The CUDA (and cuDNN) wheels for ``python``, built by install/wheel.sh."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCN_") or k in (
        "FCN_CACHE_DIR", "FCN_BUNDLE")}
    if not env.get("FCN_BUNDLE") and not list((REPO / "out").glob("fcn-offline-*.tar.xz")):
        say("wheels: the offline bundle first (Boost.Python for another Python; make bundle)")
        r = subprocess.run(["make", "-C", str(REPO), "bundle"], env=env)
        if r.returncode:
            raise Failed("wheels", "make bundle did not succeed (its output is above)")
    made = []
    for kind, extra in (("CUDA", {"FCN_GPU": "1"}),
                        ("cuDNN", {"FCN_GPU": "1", "FCN_CUDNN": "1"}))[:2 if cudnn else 1]:
        say(f"wheels: the {kind} build for {python} (install/wheel.sh; the first build "
            "compiles for a quarter of an hour or more)")
        p = subprocess.Popen(["bash", str(REPO / "install/wheel.sh")], env={
            **env, **extra, "PYTHON": python}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in p.stdout:                  # its progress, as it comes
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        if p.wait():
            raise Failed("wheels", f"install/wheel.sh ({kind}): "
                         f"{(''.join(lines).strip().splitlines() or ['no output'])[-1]}")
        m = re.search(r"^wheel: (\S+\.whl): ", "".join(lines), re.M)
        if not m:
            raise Failed("wheels", f"install/wheel.sh ({kind}) named no wheel")
        made.append(Path(m.group(1)))
    return made


def put_wheels(wheels, pack):
    d = pack / "wheels"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for w in wheels:
        if not w.is_file():
            raise Failed("wheels", f"no such wheel: {w}")
        shutil.copy2(w, d / w.name)
    say(f"wheels: {', '.join(f'{w.name} ({mib(w.stat().st_size)})' for w in wheels)}")


# ---------------------------------------------------------------------------
# pack: the check's data


def make_data(dest, small):
    """voc-demo (image, label), an SBD-format copy of that pair for voc-fcn32s's data
    layer, a few CamVid pairs, and the SqueezeNet FCN initialisation; with ``small``,
    every image at a quarter of its size (the tests)."""
    if not (SHARED_DATA / "voc-demo/image.jpg").is_file():
        raise Failed("pack", f"{SHARED_DATA} is missing or incomplete; the data is made from "
                     "../shared (or $FCN_SHARED)")
    if dest.exists():
        shutil.rmtree(dest)

    def copy(src, dst, label=False):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not small:
            return shutil.copy(src, dst)
        im = Image.open(src)
        im.resize((max(im.width // 4, 1), max(im.height // 4, 1)),
                  Image.NEAREST if label else Image.BILINEAR).save(dst)

    for f in ("image.jpg", "label.png"):
        copy(SHARED_DATA / "voc-demo" / f, dest / "voc-demo" / f, label=f == "label.png")
    sbd = dest / "sbdd/dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    label = np.asarray(Image.open(dest / "voc-demo/label.png"))
    for i in ("2007_000129", "2007_000129b"):
        shutil.copy(dest / "voc-demo/image.jpg", sbd / "img" / f"{i}.jpg")
        scipy.io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {
            "Segmentation": np.where(label == 255, 0, label).astype(np.uint8)}})
    (sbd / "train.txt").write_text("2007_000129\n2007_000129b\n")
    cam = dest / "camvid"
    for split, n in (("train", 8), ("val", 4)):
        names = sorted(p.name for p in (SHARED_DATA / "camvid" / split).iterdir())[:n]
        for sub in (split, f"{split}annot"):
            for name in names:
                copy(SHARED_DATA / "camvid" / sub / name, cam / sub / name,
                     label=sub.endswith("annot"))
        (cam / f"{split}.txt").write_text("".join(
            f"/SegNet/CamVid/{split}/{n_} /SegNet/CamVid/{split}annot/{n_}\n" for n_ in names))
    (dest / "weights").mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        squeezenet_fcn(SHARED_DATA / "squeezenet", Path(tmp) / "sq.caffemodel",
                       dest / "weights/squeezenet-fcn.caffemodel")
    say(f"pack: the check's data in {dest} ({mib(tree_size(dest))})")


# ---------------------------------------------------------------------------
# run: what travels, on a Python like the machine's, with no network


def tree_size(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def travelling_files():
    """What a device call sends besides the carried paths: the files git tracks and
    the untracked ones it does not ignore (paths relative to the repo)."""
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True, check=True)
    return sorted({p for p in r.stdout.decode().split("\0") if p and (REPO / p).is_file()})


def carried(pack):
    """The carried paths (relative to the repo): the pack, which must lie inside it."""
    try:
        rel = pack.resolve().relative_to(REPO)
    except ValueError:
        raise Failed("run", f"the pack {pack} is outside the repo; only paths inside it can "
                     "be carried") from None
    return [rel.as_posix()]


def machine_python(python):
    """A venv of ``python`` (3.12) holding what the GPU machine has, in the build
    cache; made again when install/gpu-machine.txt changes."""
    venv = cache_dir() / "rehearsal" / f"machine-{Path(python).name}"
    python = find_python(python)
    stamp = venv / ".fcn-requirements"
    want = hashlib.sha256(MACHINE_REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want:
        return venv / "bin/python3"
    say(f"run: a venv of {python} with what the GPU machine has ({MACHINE_REQUIREMENTS.name}; "
        f"several GB the first time) in {venv}")
    if venv.exists():
        shutil.rmtree(venv)
    for cmd in ([python, "-m", "venv", str(venv)],
                [str(venv / "bin/python"), "-m", "pip", "install", "-q",
                 "--disable-pip-version-check", "-r", str(MACHINE_REQUIREMENTS)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise Failed("run", f"{' '.join(cmd[:4])}: "
                         f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    stamp.write_text(want + "\n")
    return venv / "bin/python3"


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def out_problems(out):
    """What the device tool would not bring back from $OUT."""
    files = [p for p in out.rglob("*") if p.is_file()]
    bad = []
    if len(files) > OUT_FILES:
        bad.append(f"{len(files)} files (at most {OUT_FILES} come back)")
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if len(rel.parts) > OUT_DEPTH + 1:
            bad.append(f"{rel}: deeper than {OUT_DEPTH} folders")
        if not SAFE_NAME.match(p.name):
            bad.append(f"{rel}: a name with other characters than letters, digits, . _ -")
        if p.is_file() and p.stat().st_size > 16 << 20:
            bad.append(f"{rel}: over 16 MiB")
    return bad


def verdict(result, models, wheels, sgd_runs=2):
    """Why the check's JSON is not the whole rehearsal it must be, or None."""
    if not result.get("passed") or not result.get("complete"):
        return f"gpu-check.json says {result.get('reason')!r}"
    for w in wheels:
        tag = w.name.split("-")[1].partition("+")[2]
        b = result["builds"].get(tag)
        if b is None:
            return f"no result for {w.name}"
        if b.get("checked") == "import only":
            continue
        got = [r["model"] for r in b.get("deploy", [])]
        if got != models:
            return f"{tag}: deploy nets {got}, not {models}"
        if len([r for r in b.get("sgd", []) if "crashed" not in r]) != sgd_runs:
            return f"{tag}: SGD runs {b.get('sgd')}"
        speed = b.get("speed", {})
        for key in ("fcn8s_forward", "fcn32s_sgd_iteration", "camvid_training"):
            if key not in speed:
                return f"{tag}: speed lacks {key}"
        if "fcn8s" not in b.get("memory", {}):
            return f"{tag}: memory lacks fcn8s"
    return None


def rehearse(pack, models, machine, results, sgd_models=None):
    """Copy what travels, run the device command there with no network; the result."""
    files = travelling_files()
    carry = carried(pack)
    tree = sum((REPO / p).stat().st_size for p in files)
    extra = sum(tree_size(REPO / c) for c in carry)
    total = tree + extra
    say(f"run: what travels: {len(files)} files of the tree ({mib(tree)}) + carried "
        f"{' '.join(carry)} ({mib(extra)}) = {mib(total)} of {mib(TRAVEL_LIMIT)}")
    if total > TRAVEL_LIMIT:
        raise Failed("run", f"what travels is {mib(total)}, over the {mib(TRAVEL_LIMIT)} a "
                     "device call carries")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        raise Failed("run", "unshare -n does not work here (it needs root): the run without "
                     "network cannot be rehearsed")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-rehearsal-"))
    try:
        copy = tmp / REPO.name
        for p in files:
            (copy / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / p, copy / p)
        for c in carry:
            shutil.copytree(REPO / c, copy / c, symlinks=True)
        out, home = tmp / "OUT", tmp / "home"
        out.mkdir()
        home.mkdir()
        before = snapshot(copy)
        env = {"PATH": f"{Path(machine).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "LANG": "C.UTF-8", "OUT": str(out), "FCN_GPU_CHECK_STAND_IN": "cpu"}
        cmd = DEVICE_COMMAND + (f" --pack {carry[0]}" if REPO / carry[0] != PACK else "") + (
            f" --models {','.join(models)}" if models else "") + (
            f" --sgd-models {','.join(sgd_models)}" if sgd_models else "")
        say(f"run: {cmd} in a copy of what travels ({copy}), no network, "
            f"{Path(machine).parent.parent.name}'s Python, the CPU standing in for the GPU")
        r = subprocess.run(["unshare", "-n", "bash", "-c", cmd], cwd=copy, env=env)
        after = snapshot(copy)
        if results.exists():
            shutil.rmtree(results)
        shutil.copytree(out, results)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        try:
            result = json.loads((out / "gpu-check.json").read_text())
        except (OSError, ValueError) as e:
            raise Failed("run", f"no readable gpu-check.json ({e}); exit {r.returncode}")
        return {"exit": r.returncode, "result": result, "changed": changed,
                "out_problems": out_problems(out), "carry": carry, "size": total,
                "command": cmd}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="gpu_rehearsal.py", description=__doc__.split("\n")[0])
    p.add_argument("--python", default="python3.12", help="the GPU machine's Python")
    p.add_argument("--no-cudnn", action="store_true", help="the CUDA wheel only")
    p.add_argument("--wheel", action="append", type=Path, help="use this wheel (repeatable)")
    p.add_argument("--pack", type=Path, default=PACK, help="the carried folder")
    p.add_argument("--small", action="store_true", help="images at a quarter of their size")
    p.add_argument("--models", help="deploy nets (comma-separated; default every one)")
    p.add_argument("--sgd-models", help="the nets the sgd part trains (default both)")
    p.add_argument("--machine-python", help="a python3 standing in for the machine's "
                   "(default: a venv of --python with install/gpu-machine.txt)")
    p.add_argument("--results", type=Path, default=REPO / "out/gpu-rehearsal",
                   help="where the run's $OUT is kept (default: %(default)s)")
    p.add_argument("--steps", default="wheels,pack,run")
    args = p.parse_args(argv)
    steps = args.steps.split(",")
    if set(steps) - {"wheels", "pack", "run"}:
        raise UserError(f"--steps: {args.steps}; steps: wheels, pack, run")
    pack = args.pack.resolve()
    models = args.models.split(",") if args.models else None
    try:
        if "wheels" in steps:
            put_wheels([w.resolve() for w in args.wheel] if args.wheel else
                       make_wheels(find_python(args.python), not args.no_cudnn), pack)
        if "pack" in steps:
            make_data(pack / "data", args.small)
        if "run" in steps:
            wheels = sorted((pack / "wheels").glob("*.whl"))
            if not wheels:
                raise Failed("run", f"no wheel in {pack / 'wheels'}")
            machine = args.machine_python or machine_python(args.python)
            sgd_models = args.sgd_models.split(",") if args.sgd_models else None
            got = rehearse(pack, models, machine, args.results.resolve(), sgd_models)
            all_models = models or sorted(d.name for d in REPO.iterdir()
                                          if (d / "deploy.prototxt").is_file())
            why = verdict(got["result"], all_models, wheels, len(sgd_models) if sgd_models else 2)
            if why is None and got["exit"] != 0:
                why = f"the device command ended with exit {got['exit']}"
            if why is None and got["changed"]:
                why = f"it wrote outside $OUT: {', '.join(got['changed'][:5])}"
            if why is None and got["out_problems"]:
                why = f"$OUT would not come back whole: {'; '.join(got['out_problems'][:3])}"
            if why:
                raise Failed("run", why)
            print(f"gpu rehearsal: passed; carry: {' '.join(got['carry'])} "
                  f"({mib(got['size'])}); device command: {got['command']}", flush=True)
    except Failed as e:
        print(f"gpu rehearsal: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="gpu_rehearsal.py"))

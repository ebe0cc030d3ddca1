"""make demo's training iteration: this build against an earlier one, on the same data.

    python bench/demo_speed.py --baseline-rev REV [--rounds 6] [--iters 20]
    python bench/demo_speed.py --baseline DIR   (DIR holds a built caffe package)
    python bench/demo_speed.py --baseline-env NAME=VALUE   (this build, NAME=VALUE set)

Times the SGD iterations of make demo's net (camvid-fcn8s-squeezenet from its committed
solver and prototxt, CamVid train read by its data layer, He-random weights) with this
checkout's Caffe and with the baseline's, each in fresh processes, the two alternating
for --rounds rounds (so that a slow spell of a shared machine falls on both): per
process 3 warm-up iterations, then --iters timed one by one. The baseline of --baseline-rev
is built once into the build cache (fcn.timing.baseline_package); --baseline-env runs
this build as the baseline with one environment variable set (CAFFE_WINOGRAD=0: BVLC's
im2col + GEMM; CAFFE_CPU_ISA=avx2: the narrower vector unit). Prints one JSON
line: per build the median iteration over all rounds and the fastest process's median,
iterations per second, and baseline / this (how many times faster this build is).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fcn import squeezenet  # noqa: E402
from fcn.errors import UserError  # noqa: E402
from fcn.paths import REPO  # noqa: E402
from fcn.timing import baseline_package  # noqa: E402

WORKER = r'''
import json, os, statistics, sys, time
from pathlib import Path
repo, model, iters = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sys.path.insert(0, str(repo))
import fcn  # noqa: F401  (Caffe's logging set up before caffe loads)
import caffe
import numpy as np
caffe.set_mode_cpu()
os.chdir(sys.argv[4])
for f in ("solver.prototxt", "train.prototxt", "val.prototxt"):
    os.symlink(repo / model / f, f)
os.mkdir("snapshot")
solver = caffe.SGDSolver("solver.prototxt")
rng = np.random.default_rng(0)
for name, params in solver.net.params.items():
    w = params[0].data
    if name.startswith("upscore"):
        continue                                   # bilinear, as surgery leaves them
    w[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(
        (2 / max(int(np.prod(w.shape[1:])), 1)) ** 0.5)
from fcn.surgery import interp
interp(solver.net)
solver.step(3)
times = []
for _ in range(iters):
    t = time.perf_counter()
    solver.step(1)
    times.append(time.perf_counter() - t)
print(json.dumps({"iteration_s": times, "caffe": caffe.__file__,
                  "loss": float(solver.net.blobs["loss"].data)}))
'''


def run(pythonpath, model, iters, data, extra_env=None):
    env = {**os.environ, "GLOG_minloglevel": "2", "FCN_DATA": str(data), **(extra_env or {})}
    if pythonpath:                 # the baseline; this build: this Python's own caffe
        env["PYTHONPATH"] = str(pythonpath)
    with tempfile.TemporaryDirectory(prefix="demo-speed-") as wd:
        p = subprocess.run([sys.executable, "-c", WORKER, str(REPO), model, str(iters), wd],
                           env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"demo_speed: a worker failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--baseline-rev", help="git revision whose Caffe is the baseline")
    g.add_argument("--baseline", help="a folder holding a built caffe package")
    g.add_argument("--baseline-env", metavar="NAME=VALUE",
                   help="this build with NAME=VALUE in the environment as the baseline")
    p.add_argument("--model", default="camvid-fcn8s-squeezenet")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.iters < 1:
        p.error("--rounds and --iters must be at least 1")
    if args.model not in {d.name for d in REPO.iterdir() if (d / "solver.prototxt").is_file()}:
        p.error(f"--model {args.model}: no such model folder with a solver.prototxt")
    if args.baseline_env is not None:
        name, eq, value = args.baseline_env.partition("=")
        if not eq or not name.isidentifier():
            p.error(f"--baseline-env {args.baseline_env}: expected NAME=VALUE")
    try:
        data = squeezenet.cpu_scale_data()
    except UserError as e:
        p.error(str(e))
    base_env = None
    if args.baseline_env is not None:
        base, base_env, label = None, {name: value}, f"this build, {args.baseline_env}"
    elif args.baseline:
        base = Path(args.baseline).resolve()
        if not (base / "caffe" / "__init__.py").is_file():
            p.error(f"--baseline {args.baseline}: no caffe package in it")
        label = str(base)
    else:
        rev = subprocess.run(["git", "rev-parse", args.baseline_rev], cwd=REPO,
                             capture_output=True, text=True)
        if rev.returncode != 0:
            p.error(f"--baseline-rev {args.baseline_rev}: not a revision of this repository")
        base = baseline_package(rev.stdout.strip())
        label = args.baseline_rev

    runs = {"this": [], "baseline": []}
    for r in range(args.rounds):
        order = [("this", None, None), ("baseline", base, base_env)]
        for name, path, env in (order if r % 2 == 0 else order[::-1]):
            runs[name].append(run(path, args.model, args.iters, data, env))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    out = {"model": args.model, "rounds": args.rounds, "iters": args.iters,
           "baseline_is": label}
    for name, rs in runs.items():
        med = statistics.median(t for r in rs for t in r["iteration_s"])
        best = min(statistics.median(r["iteration_s"]) for r in rs)
        out[name] = {"iteration_s": round(med, 4), "fastest_process_s": round(best, 4),
                     "it_per_s": round(1 / med, 2), "caffe": rs[0]["caffe"]}
    out["per_process_s"] = {n: [round(statistics.median(r["iteration_s"]), 4) for r in rs]
                            for n, rs in runs.items()}
    out["speedup"] = round(out["baseline"]["iteration_s"] / out["this"]["iteration_s"], 3)
    out["speedup_fastest"] = round(out["baseline"]["fastest_process_s"]
                                   / out["this"]["fastest_process_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""CamVid at CPU scale: pretrained FCN-16s and FCN-8s (SqueezeNet) against the
same FCN-8s from random initialisation, each trained for the same time budget.

    python bench/camvid.py [--minutes 60] [--data D] [--out out/bench/camvid] [--runs ...]

Prints one JSON line: per run the iterations, minutes and CamVid val metrics at
the end (and at every scoring), and the peer comparison of the same run,
pretrained FCN-8s mean IU minus random-init FCN-8s mean IU (points).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = {
    "fcn16s-pretrained": ("camvid-fcn16s-squeezenet", []),
    "fcn8s-pretrained": ("camvid-fcn8s-squeezenet", []),
    "fcn8s-random-init": ("camvid-fcn8s-squeezenet", ["--from-scratch"]),
}


def data_dir(explicit):
    if explicit:
        return Path(explicit)
    if os.environ.get("FCN_DATA"):
        return Path(os.environ["FCN_DATA"])
    return REPO.parent / "shared" / "data"


def ensure_init(data, out):
    """The SqueezeNet FCN initialisation, made the way make demo makes it."""
    init = out / "squeezenet-fcn.caffemodel"
    if not init.is_file():
        weights = out / "squeezenet_v1.0.caffemodel"
        py = sys.executable
        subprocess.run([py, str(REPO / "squeezenet.py"), "--src", str(data / "squeezenet"),
                        "--out", str(weights)], check=True)
        subprocess.run([py, str(REPO / "surgery.py"), "squeezenet", "--weights", str(weights),
                        "--out", str(init)], check=True)
    return init


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--test-interval", type=int, default=1000)
    p.add_argument("--data")
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "camvid"))
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = p.parse_args(argv)
    data, out = data_dir(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init = ensure_init(data, out)
    results = {}
    for name in args.runs:
        model, extra = RUNS[name]
        run = out / name
        cmd = [sys.executable, str(REPO / model / "solve.py"), "--time-budget", str(args.minutes),
               "--iters", "10000000", "--test-interval", str(args.test_interval),
               "--display", "200", "--data-root", str(data), "--out", str(run)]
        cmd += extra if extra else ["--weights", str(init)]
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
        t = time.time()
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        scores = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        last = scores[-1]
        results[name] = {
            "model": model, "init": "random (Caffe fillers)" if extra else "SqueezeNet ImageNet",
            "iterations": last["iter"], "minutes": round((time.time() - t) / 60, 1),
            **{k: round(100 * last[k], 2) for k in ("pixel_accuracy", "mean_accuracy",
                                                    "mean_iu", "fw_iu")},
            "mean_iu_by_iter": {s["iter"]: round(100 * s["mean_iu"], 2) for s in scores},
        }
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    line = {"bench": "camvid", "budget_minutes": args.minutes, "split": "val (101 images)",
            "runs": results}
    if "fcn8s-pretrained" in results and "fcn8s-random-init" in results:
        line["pretrained_minus_random_mean_iu"] = round(
            results["fcn8s-pretrained"]["mean_iu"] - results["fcn8s-random-init"]["mean_iu"], 2)
    print(json.dumps(line))
    (out / "result.json").write_text(json.dumps(line, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CamVid at CPU scale: pretrained FCN-16s and FCN-8s (SqueezeNet) against the
same FCN-8s from random initialisation, each trained for the same time budget.

    python bench/camvid.py [--minutes 60] [--out out/bench/camvid] [--runs ...]

Data: fcn.squeezenet.cpu_scale_data(), as for make demo.

Prints one JSON line: per run the iterations, minutes and CamVid val metrics at
the end (and at every scoring), and the peer comparison of the same run,
pretrained FCN-8s mean IU minus random-init FCN-8s mean IU (points).
"""
import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fcn import cli, files, squeezenet, train, zoo  # noqa: E402
from fcn.initial import squeezenet_fcn  # noqa: E402
from fcn.device import use_device  # noqa: E402

RUNS = {   # name -> (model, from scratch?)
    "fcn16s-pretrained": ("camvid-fcn16s-squeezenet", False),
    "fcn8s-pretrained": ("camvid-fcn8s-squeezenet", False),
    "fcn8s-random-init": ("camvid-fcn8s-squeezenet", True),
}


def ensure_init(data, out):
    """The SqueezeNet FCN initialisation, made the way make demo makes it."""
    init = out / "squeezenet-fcn.caffemodel"
    if not init.is_file():
        squeezenet_fcn(data / "squeezenet", out / "squeezenet_v1.0.caffemodel", init)
    return init


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--test-interval", type=int, default=1000)
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "camvid"))
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    device = use_device(args.gpu, args.cpu)
    data, out = squeezenet.cpu_scale_data(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init = ensure_init(data, out)
    results = {}
    for name in args.runs:
        model, scratch = RUNS[name]
        run = out / name
        if run.exists():
            shutil.rmtree(run)
        options = train.Options(
            time_budget=args.minutes, iters=10_000_000, test_interval=args.test_interval,
            display=200, data_root=str(data), out=str(run), device=device,
            weights=None if scratch else str(init), from_scratch=scratch)
        t = time.time()
        with open(out / f"{name}.log", "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            result = train.run(zoo.MODELS[model], options)
        if result.exit_code:
            return result.exit_code
        scores = files.read_jsonl(run / "metrics.jsonl")
        last = scores[-1]
        results[name] = {
            "model": model, "init": "random (Caffe fillers)" if scratch else "SqueezeNet ImageNet",
            "iterations": last["iter"], "minutes": round((time.time() - t) / 60, 1),
            **{k: round(100 * last[k], 2) for k in ("pixel_accuracy", "mean_accuracy",
                                                    "mean_iu", "fw_iu")},
            "mean_iu_by_iter": {s["iter"]: round(100 * s["mean_iu"], 2) for s in scores},
        }
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    line = {"bench": "camvid", "budget_minutes": args.minutes, "split": "val (101 images)",
            "device": device.record(), "runs": results}
    if "fcn8s-pretrained" in results and "fcn8s-random-init" in results:
        line["pretrained_minus_random_mean_iu"] = round(
            results["fcn8s-pretrained"]["mean_iu"] - results["fcn8s-random-init"]["mean_iu"], 2)
    print(json.dumps(line))
    (out / "result.json").write_text(json.dumps(line, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="bench/camvid.py"))

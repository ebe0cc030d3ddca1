"""Caffe against onnxruntime layer by layer: where the time of a forward goes.

    python bench/layer_times.py [--model voc-fcn8s] [--size 500x500] [--reps 5]

One process each (Caffe first, then onnxruntime on the project's ONNX export of the
same net and weights, all graph optimisations, as many threads as cores). Caffe's
layers are timed one at a time (Net._forward(i, i), warm, median of --reps);
onnxruntime's from its profiler (the median per node over --reps runs; a node that
fused a convolution with its ReLU counts as the convolution). Prints one JSON line:
per layer, Caffe's and onnxruntime's milliseconds and their ratio, the layers sorted
by the time Caffe loses, and the totals.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fcn.timing import image_input, make_weights  # noqa: E402
from fcn.device import cpu_name  # noqa: E402
from fcn import cli  # noqa: E402


def caffe_times(weights, h, w, reps):
    import caffe
    caffe.set_mode_cpu()
    net = caffe.Net(str(weights.parent / "deploy.prototxt"), str(weights), caffe.TEST)
    net.blobs["data"].reshape(1, 3, h, w)
    net.reshape()
    net.blobs["data"].data[...] = image_input(h, w)
    net.forward()
    names = list(net._layer_names)
    times = {n: [] for n in names}
    for _ in range(reps):
        for i, n in enumerate(names):
            t = time.perf_counter()
            net._forward(i, i)
            times[n].append(time.perf_counter() - t)
    return {n: 1000 * statistics.median(v) for n, v in times.items()}


def ort_times(weights, h, w, reps):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count()
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(str(weights.with_suffix(".onnx")), so,
                                providers=["CPUExecutionProvider"])
    x = image_input(h, w)
    sess.run(["score"], {"data": x})
    for _ in range(reps):
        sess.run(["score"], {"data": x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][:-len("_kernel_time")]
        # Crop's Shape/Add/Slice count as the Crop; a convolution or pooling in
        # onnxruntime's blocked layout is the node name + "_nchwc"
        layer = node.split("/")[0].removesuffix("_nchwc")
        per.setdefault(layer, []).append(e["dur"] / 1000)
    # the first run is the warm-up: drop it, then the median of the per-run sums
    out = {}
    for layer, durs in per.items():
        n = len(durs) // (reps + 1)
        runs = [sum(durs[k * n:(k + 1) * n]) for k in range(1, reps + 1)]
        out[layer] = statistics.median(runs)
    return out


def worker(kind, weights, h, w, reps, result):
    fn = {"caffe": caffe_times, "ort": ort_times}[kind]
    Path(result).write_text(json.dumps(fn(Path(weights), h, w, reps)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="voc-fcn8s")
    p.add_argument("--size", default="500x500")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    h, w = map(int, args.size.split("x"))
    if args.worker:
        worker(args.worker, args.weights, h, w, args.reps, args.result)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_weights(tmp, args.model, onnx=True)
        (Path(tmp) / "deploy.prototxt").write_text((REPO / args.model / "deploy.prototxt")
                                                    .read_text())
        res = {}
        for kind in ("caffe", "ort"):
            out = Path(tmp) / f"{kind}.json"
            subprocess.run([sys.executable, __file__, "--worker", kind, "--weights", str(weights),
                            "--size", args.size, "--reps", str(args.reps), "--result", str(out)],
                           check=True, cwd=REPO)
            res[kind] = json.loads(out.read_text())
    c, o = res["caffe"], res["ort"]
    layers = {}
    for name, ms in c.items():
        if ms < 0.05 and name not in o:
            continue
        row = {"caffe_ms": round(ms, 2), "ort_ms": round(o.get(name, 0.0), 2)}
        row["caffe_minus_ort_ms"] = round(row["caffe_ms"] - row["ort_ms"], 2)
        layers[name] = row
    worst = sorted(layers, key=lambda n: -layers[n]["caffe_minus_ort_ms"])
    line = {"bench": "layer_times", "model": args.model, "size": args.size, "cpu": cpu_name(),
            "cores": os.cpu_count(), "caffe_total_ms": round(sum(c.values()), 1),
            "ort_total_ms": round(sum(o.values()), 1),
            "ort_nodes_of_its_own_ms": round(sum(v for k, v in o.items() if k not in c), 1),
            "layers": layers,
            "caffe_loses_most": worst[:8]}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="bench/layer_times.py"))

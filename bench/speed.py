"""Caffe (this build, pycaffe) against PyTorch, onnxruntime and OpenVINO on the CPU,
same nets, same weights.

    python bench/speed.py [--reps 5] [--rounds 3] [--parts forward,first,infer,train]
                          [--gpu N | --cpu]

Measures, in one run, each part in fresh processes so that neither library's
thread pool disturbs the other; Caffe and PyTorch processes alternate for
--rounds rounds, and each figure is the median of all their repetitions:
  forward  warm forward of voc-fcn8s/deploy.prototxt at 500x500 and 334x500,
           Caffe and PyTorch, their ratio, and the largest absolute difference
           between the two score maps; also Caffe with CAFFE_WINOGRAD=0 (im2col +
           GEMM for every convolution, as before patch 0010), same figures; and
           the project's own ONNX export of the same net and weights (reference.py
           onnx) under onnxruntime (all graph optimisations, as many threads as
           cores) and OpenVINO (fp32, compiled for each input size; left out where
           it is not installed), their ratios and Caffe over the faster of the two.
           Beside them, the roofline: this CPU's fp32 GEMM rate through Caffe's own
           OpenBLAS (2048^3), and Caffe's forward rate counted as direct convolution
           (which Winograd can exceed);
  first    Caffe's first forward in a fresh process against its warm forward;
  infer    infer.py's wall time from process start to PNG written, on the VOC
           demo image with a caffemodel of the released size (random weights),
           median of --rounds runs, against the warm forward at that size;
  train    one SGD iteration (forward, backward, update) of voc-fcn32s on a
           500x375 image with the solver's settings, Caffe and PyTorch;
and the peak resident memory of every process. Prints one JSON line.
Needs PyTorch (make bench installs requirements-bench.txt). With --gpu N (a CUDA
build), Caffe and PyTorch both run on that GPU (fp32, TF32 off), each timing ended by
a synchronisation; the default is the CPU.
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

import fcn  # noqa: E402,F401  (first: Caffe's logging set up before caffe loads)
import caffe  # noqa: E402
import numpy as np  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from fcn import cli  # noqa: E402,I100
from fcn.device import cpu_name, use_device  # noqa: E402
from fcn.timing import SIZES, image_input, make_weights  # noqa: E402
# PyTorch, onnxruntime and OpenVINO are imported by their workers alone: a Caffe
# worker's process never starts their thread pools.

DEVICE = "cpu"          # or a GPU id (str): what --gpu asked for, passed to each worker


def caffe_mode():
    if DEVICE == "cpu":
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(DEVICE))
        caffe.set_mode_gpu()
    return caffe


def torch_device():
    """(torch, its device, a function that waits for it)."""
    import torch
    if DEVICE == "cpu":
        torch.set_num_threads(os.cpu_count())
        return torch, torch.device("cpu"), lambda: None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch, torch.device(f"cuda:{DEVICE}"), torch.cuda.synchronize


# ---------------------------------------------------------------------------
# Workers (run in their own processes)


def worker_caffe_forward(weights, reps, out):
    caffe = caffe_mode()
    net = caffe.Net(str(REPO / "voc-fcn8s/deploy.prototxt"), str(weights), caffe.TEST)
    res, maps = {}, {}
    for h, w in SIZES:
        x = image_input(h, w)
        net.blobs["data"].reshape(1, 3, h, w)
        net.reshape()
        net.forward(data=x)                                  # warm up at this size
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            net.forward(data=x)
            times.append(time.perf_counter() - t)
        res[f"{h}x{w}"] = times
        maps[f"{h}x{w}"] = net.blobs["score"].data.copy()
    np.savez(out, **maps)
    return res


def worker_caffe_roofline(weights, reps, out):
    """This CPU's fp32 peak as Caffe reaches it (one 2048^3 GEMM through its own
    OpenBLAS, an InnerProduct layer, median of the warm repetitions), and the
    multiply-adds of FCN-8s's convolutions at each size as direct convolution counts
    them (2 per weight per output position)."""
    caffe = caffe_mode()
    n = 2048
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.prototxt"
        path.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { '
                        f'dim: {n} dim: {n} }} }} }} layer {{ name: "y" type: "InnerProduct" '
                        f'bottom: "x" top: "y" inner_product_param {{ num_output: {n} '
                        'bias_term: false } }')
        gemm = caffe.Net(str(path), caffe.TEST)
    gemm.blobs["x"].data[...] = 1
    gemm.params["y"][0].data[...] = 1e-3
    gemm.forward()
    times = []
    for _ in range(max(reps, 3)):
        t = time.perf_counter()
        gemm.forward()
        times.append(time.perf_counter() - t)
    net = caffe.Net(str(REPO / "voc-fcn8s/deploy.prototxt"), caffe.TEST)
    flops = {}
    for h, w in SIZES:
        net.blobs["data"].reshape(1, 3, h, w)
        net.reshape()
        total = 0
        for name, layer in zip(net._layer_names, net.layers):
            if layer.type in ("Convolution", "Deconvolution"):
                blob = net.top_names[name][0] if layer.type == "Convolution" \
                    else net.bottom_names[name][0]
                total += 2 * layer.blobs[0].data.size * int(np.prod(net.blobs[blob].shape[2:]))
        flops[f"{h}x{w}"] = total
    return {"sgemm_gflops": 2 * n ** 3 / statistics.median(times) / 1e9, "conv_flop": flops,
            "isa": caffe.cpu_isa() if hasattr(caffe, "cpu_isa") else None}


def worker_caffe_im2col_forward(weights, reps, out):
    """The same with patch 0010's Winograd forward off: BVLC's im2col + GEMM."""
    os.environ["CAFFE_WINOGRAD"] = "0"
    return worker_caffe_forward(weights, reps, out)


def worker_torch_forward(weights, reps, out):
    from fcn.torch_net import TorchNet
    torch, dev, sync = torch_device()
    cnet = caffe.Net(str(REPO / "voc-fcn8s/deploy.prototxt"), str(weights), caffe.TEST)
    tnet = TorchNet(str(REPO / "voc-fcn8s/deploy.prototxt"), cnet).train(False).to(dev)
    del cnet
    res, maps = {}, {}
    with torch.no_grad():
        for h, w in SIZES:
            x = torch.from_numpy(image_input(h, w)).to(dev)
            tnet(data=x)
            times = []
            for _ in range(reps):
                sync()
                t = time.perf_counter()
                y = tnet(data=x)["score"]
                sync()
                times.append(time.perf_counter() - t)
            res[f"{h}x{w}"] = times
            maps[f"{h}x{w}"] = y.cpu().numpy().copy()
    np.savez(out, **maps)
    return res


def timed_forward(run, reps, out):
    """{size: warm forward times} of run(h, w) -> (forward function, its input); the
    score maps go to ``out``."""
    res, maps = {}, {}
    for h, w in SIZES:
        forward, x = run(h, w)
        forward(x)                                           # warm up at this size
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            y = forward(x)
            times.append(time.perf_counter() - t)
        res[f"{h}x{w}"] = times
        maps[f"{h}x{w}"] = np.array(y, copy=True)
    np.savez(out, **maps)
    return res


def worker_ort_forward(weights, reps, out):
    """onnxruntime on the ONNX export beside the weights (the same net and weights)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count()
    sess = ort.InferenceSession(str(weights.with_suffix(".onnx")), so,
                                providers=["CPUExecutionProvider"])

    def run(h, w):
        return (lambda x: sess.run(["score"], {"data": x})[0]), image_input(h, w)
    return timed_forward(run, reps, out)


def worker_openvino_forward(weights, reps, out):
    """OpenVINO on the same ONNX file, reshaped to each input size and compiled for it
    (fp32: no bf16 or f16 inference precision)."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(weights.with_suffix(".onnx")))
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": os.cpu_count()}

    def run(h, w):
        model.reshape({"data": [1, 3, h, w]})
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def forward(x):
            request.infer({"data": x})
            return request.get_output_tensor(0).data
        return forward, image_input(h, w)
    return timed_forward(run, reps, out)


def openvino_installed():
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def worker_caffe_first(weights, reps, out):
    t0 = time.perf_counter()
    caffe = caffe_mode()
    net = caffe.Net(str(REPO / "voc-fcn8s/deploy.prototxt"), str(weights), caffe.TEST)
    t_load = time.perf_counter() - t0
    x = image_input(500, 500)
    net.blobs["data"].reshape(1, 3, 500, 500)
    net.reshape()
    t = time.perf_counter()
    net.forward(data=x)
    first = time.perf_counter() - t
    warm = []
    for _ in range(reps):
        t = time.perf_counter()
        net.forward(data=x)
        warm.append(time.perf_counter() - t)
    return {"import_and_load_s": t_load, "first_s": first, "warm_s": statistics.median(warm)}


def train_net_file(tmp):
    """voc-fcn32s's training net with Input layers instead of the data layer."""
    p = text_format.Parse((REPO / "voc-fcn32s/train.prototxt").read_text(), caffe_pb2.NetParameter())
    d = p.layer[0]
    d.Clear()
    d.name, d.type = "input", "Input"
    d.top.extend(["data", "label"])
    for dims in ([1, 3, 375, 500], [1, 1, 375, 500]):
        d.input_param.shape.add().dim.extend(dims)
    path = Path(tmp) / "train.prototxt"
    path.write_text(str(p))
    return path


def train_batch():
    rng = np.random.default_rng(2)
    return image_input(375, 500), rng.integers(0, 21, (1, 1, 375, 500)).astype(np.float32)


def worker_caffe_train(weights, reps, out):
    caffe = caffe_mode()
    tmp = tempfile.mkdtemp()
    s = text_format.Parse((REPO / "voc-fcn32s/solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    s.train_net = str(train_net_file(tmp))
    del s.test_net[:]
    del s.test_iter[:]
    s.ClearField("test_interval")
    s.snapshot_prefix = tmp + "/s"
    s.display = 0
    (Path(tmp) / "solver.prototxt").write_text(str(s))
    solver = caffe.SGDSolver(str(Path(tmp) / "solver.prototxt"))
    solver.net.copy_from(str(weights))
    x, y = train_batch()
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = y
    solver.step(1)                                           # warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        solver.step(1)
        times.append(time.perf_counter() - t)
    return {"iteration_s": times, "loss": float(solver.net.blobs["loss"].data)}


def worker_torch_train(weights, reps, out):
    from fcn.torch_net import TorchNet, sgd_step
    torch, dev, sync = torch_device()
    tmp = tempfile.mkdtemp()
    path = train_net_file(tmp)
    cnet = caffe.Net(str(path), str(weights), caffe.TEST)
    tnet = TorchNet(str(path), cnet).train().to(dev)
    del cnet
    x, y = (torch.from_numpy(a).to(dev) for a in train_batch())
    step = sgd_step(tnet, {"data": x, "label": y})
    step()
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t)
    return {"iteration_s": times, "loss": float(loss.detach())}


WORKERS = {k[len("worker_"):]: v for k, v in dict(globals()).items() if k.startswith("worker_")}


# ---------------------------------------------------------------------------
# Parent


def run_worker(name, weights, reps, tmp):
    """(result, peak RSS in GB) of one worker process."""
    out = Path(tmp) / f"{name}.npz"
    res_file = Path(tmp) / f"{name}.json"
    cmd = [sys.executable, __file__, "--worker", name, "--weights", str(weights),
           "--reps", str(reps), "--out", str(out), "--result", str(res_file),
           "--device", DEVICE]
    p = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"worker {name} failed ({status})")
    return json.loads(res_file.read_text()), usage.ru_maxrss / 1e6


def interleaved(workers, weights, args, tmp):
    """Each worker --rounds times in fresh processes, alternating (A B C A B C ...), so
    that a slow spell of a shared machine falls on both: (per worker its results
    per round..., peak RSS in GB per worker)."""
    results = {w: [] for w in workers}
    rss = {w: 0.0 for w in workers}
    for r in range(args.rounds):
        for w in workers:
            res, peak = run_worker(w, weights, args.reps, tmp)
            results[w].append(res)
            rss[w] = max(rss[w], round(peak, 2))
            print(f"round {r + 1}/{args.rounds}: {w} done", file=sys.stderr, flush=True)
    return (*[results[w] for w in workers], [rss[w] for w in workers])


def med(rounds, key):
    """Median over every repetition of every round."""
    return round(statistics.median(x for r in rounds for x in r[key]), 3)


def infer_wall(weights, tmp):
    image = REPO.parent / "shared/data/voc-demo/image.jpg"
    if not image.is_file():
        from PIL import Image
        image = Path(tmp) / "image.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (500, 334, 3), np.uint8)).save(image)
    t = time.perf_counter()
    device = ["--cpu"] if DEVICE == "cpu" else ["--gpu", DEVICE]
    p = subprocess.Popen([sys.executable, str(REPO / "infer.py"), str(image), "--model", "voc-fcn8s",
                          "--weights", str(weights), "--out", str(Path(tmp) / "infer"), *device],
                         stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    assert status == 0 and (Path(tmp) / "infer/image.png").is_file(), "infer.py failed"
    return wall, usage.ru_maxrss / 1e6


def runtime_versions(runtimes):
    import onnxruntime
    import torch
    out = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if "openvino" in runtimes:
        import openvino
        out["openvino"] = openvino.__version__
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per process")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating Caffe/PyTorch processes per comparison")
    p.add_argument("--parts", default="forward,first,infer,train")
    p.add_argument("--gpu", type=int, metavar="N", help="Caffe and PyTorch on GPU N")
    p.add_argument("--cpu", action="store_true", help="on the CPU (the default)")
    p.add_argument("--worker")
    p.add_argument("--weights")
    p.add_argument("--out")
    p.add_argument("--result")
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.worker:
        res = WORKERS[args.worker](Path(args.weights), args.reps, args.out)
        Path(args.result).write_text(json.dumps(res))
        return 0

    parts = args.parts.split(",")
    unknown = set(parts) - {"forward", "first", "infer", "train"}
    if unknown:
        p.error(f"unknown --parts {','.join(sorted(unknown))} (choose from forward,first,infer,train)")
    if args.reps < 1 or args.rounds < 1:
        p.error("--reps and --rounds must be at least 1")
    device = use_device(args.gpu, args.cpu or args.gpu is None)
    DEVICE = "cpu" if not device.is_gpu else str(device.gpu)
    line = {"bench": "speed", "cpu": cpu_name(), "cores": os.cpu_count(), "reps": args.reps,
            "rounds": args.rounds, "device": device.record()}
    with tempfile.TemporaryDirectory() as tmp:
        weights8 = make_weights(tmp, onnx="forward" in parts)
        if "forward" in parts:
            runtimes = ["ort"] + (["openvino"] if openvino_installed() else [])
            names = ["caffe_forward", "caffe_im2col_forward", "torch_forward"] + \
                [f"{r}_forward" for r in runtimes]
            *results, rss = interleaved(names, weights8, args, tmp)
            c, ci, t = results[:3]
            by = dict(zip(runtimes, results[3:]))
            maps = {w: np.load(Path(tmp) / f"{w}.npz") for w in names}
            cm, cim, tm = maps["caffe_forward"], maps["caffe_im2col_forward"], maps["torch_forward"]
            line["forward"] = {}
            for size in c[0]:
                row = {"caffe_s": med(c, size), "torch_s": med(t, size),
                       "caffe_over_torch": round(med(c, size) / med(t, size), 3),
                       "max_abs_diff": float(np.abs(cm[size] - tm[size]).max()),
                       "max_abs_score": float(np.abs(cm[size]).max()),
                       "caffe_im2col_s": med(ci, size),
                       "caffe_over_caffe_im2col": round(med(c, size) / med(ci, size), 3),
                       "max_abs_diff_vs_im2col": float(np.abs(cm[size] - cim[size]).max())}
                for r, res in by.items():
                    row[f"{r}_s"] = med(res, size)
                    row[f"caffe_over_{r}"] = round(med(c, size) / med(res, size), 3)
                    row[f"max_abs_diff_{r}"] = float(
                        np.abs(cm[size] - maps[f"{r}_forward"][size]).max())
                fastest = min(runtimes, key=lambda r: row[f"{r}_s"])
                row["caffe_over_fastest_runtime"] = row[f"caffe_over_{fastest}"]
                row["fastest_runtime"] = fastest
                line["forward"][size] = row
            line["peak_rss_gb"] = dict(zip(names, rss))
            line["versions"] = runtime_versions(runtimes)
            roof, _ = run_worker("caffe_roofline", weights8, args.reps, tmp)
            peak = roof["sgemm_gflops"]
            line["roofline"] = {"caffe_sgemm_gflops": round(peak, 1), "caffe_cpu_isa": roof["isa"]}
            for size, flop in roof["conv_flop"].items():
                rate = flop / line["forward"][size]["caffe_s"] / 1e9
                line["roofline"][size] = {
                    "direct_conv_gflop": round(flop / 1e9, 1),
                    "caffe_gflops_as_direct": round(rate, 1),
                    "over_sgemm_peak": round(rate / peak, 3)}
        if "first" in parts:
            f, f_rss = run_worker("caffe_first", weights8, args.reps, tmp)
            line["first_forward"] = {k: round(v, 3) for k, v in f.items()}
            line["first_forward"]["first_over_warm"] = round(f["first_s"] / f["warm_s"], 3)
            line.setdefault("peak_rss_gb", {})["caffe_first_forward_500x500"] = round(f_rss, 2)
        if "infer" in parts:
            runs = [infer_wall(weights8, tmp) for _ in range(args.rounds)]
            wall, rss = statistics.median(r[0] for r in runs), max(r[1] for r in runs)
            warm = line.get("forward", {}).get("334x500", {}).get("caffe_s")
            line["infer"] = {"wall_s": round(wall, 3), "warm_forward_334x500_s": warm,
                             "overhead_s": round(wall - warm, 3) if warm else None}
            line.setdefault("peak_rss_gb", {})["infer_334x500"] = round(rss, 2)
        if "train" in parts:
            weights32 = make_weights(tmp, "voc-fcn32s")
            c, t, rss = interleaved(["caffe_train", "torch_train"], weights32, args, tmp)
            line["train"] = {"caffe_s": med(c, "iteration_s"), "torch_s": med(t, "iteration_s"),
                             "caffe_over_torch": round(med(c, "iteration_s") / med(t, "iteration_s"), 3),
                             "caffe_loss": c[-1]["loss"], "torch_loss": t[-1]["loss"]}
            line.setdefault("peak_rss_gb", {}).update(caffe_train=rss[0], torch_train=rss[1])
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="bench/speed.py"))

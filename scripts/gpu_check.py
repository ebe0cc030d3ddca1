"""The GPU check: what scripts/gpu-check.sh runs, once per installed CUDA build of
Caffe, on a machine with an NVIDIA GPU (and no network: everything it reads
travels with the working tree). One JSON file and a log; each part is written as
soon as it is done, so a run stopped by its time limit keeps what it measured.

    python scripts/gpu_check.py --data DIR --out DIR [--tag NAME] [--gpu N]
    python scripts/gpu_check.py --prepare DIR        (here: the data it needs)
    python scripts/gpu_check.py --self-test ...      (no GPU: the CPU stands in)

Parts, in order:
  deploy   every deploy net of the zoo on real images, GPU against CPU: the
           largest difference relative to the range of the scores (<= 1e-4)
           and the share of pixels with the same class (>= 0.999); the GPU
           memory each net took
  sgd      a few SGD iterations of voc-fcn32s and camvid-fcn8s-squeezenet from
           the same weights and the same images (the Python data layer, whole
           images, batch 1), GPU against CPU: loss and weights (Dropout taken
           out of the nets compared: its masks come from two random generators)
  speed    FCN-8s forward at 500x500 and an FCN-32s SGD iteration at 500x375,
           Caffe against PyTorch on the same GPU (fp32, TF32 off); CamVid
           training in iterations per second (GPU and CPU)
  memory   the memory model of infer.py against what FCN-8s took, and what a
           too-large image gets from infer.py (one line, exit 2)
"""
import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))       # fixtures.fake_png: an image header, no pixels

import fcn  # noqa: E402,F401  (first: Caffe's logging set up before caffe loads)
import caffe  # noqa: E402
import numpy as np  # noqa: E402
import scipy.io  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from PIL import Image  # noqa: E402

import surgery  # noqa: E402  (the repository's modules)
from fcn import caffemodel, cli, images, memory, squeezenet, zoo  # noqa: E402
from fcn.builder import MODALITIES  # noqa: E402
from fcn.datasets import DATASETS  # noqa: E402
from fcn.device import build_info, use_device  # noqa: E402
from fcn.paths import SHARED_DATA  # noqa: E402
from fixtures import fake_png  # noqa: E402

DEPLOY_TOL, ARGMAX_AGREE = 1e-4, 0.999
SGD_ITERS = 3


class Check:
    """The results so far, written to JSON after every part."""

    def __init__(self, path, tag, self_test):
        self.path = Path(path)
        self.result = {"tag": tag, "self_test": self_test, "started": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "failures": []}

    def part(self, name, fn, *args):
        t0 = time.time()
        say(f"== {name}")
        try:
            self.result[name] = fn(*args)
        except Exception as e:  # every part is kept apart: one failing loses no other
            self.result[name] = {"error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-3000:]}
            self.result["failures"].append(f"{name}: {type(e).__name__}: {e}")
            say(traceback.format_exc())
        self.result.setdefault("seconds", {})[name] = round(time.time() - t0, 1)
        self.write()

    def fail(self, what):
        self.result["failures"].append(what)
        say(f"FAIL {what}")

    def write(self):
        self.result["passed"] = not self.result["failures"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=float) + "\n")
        os.replace(tmp, self.path)


def say(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Devices


class Devices:
    """Switch Caffe between the CPU and the device under test (the GPU; in a
    self-test, the CPU again), and read the device's free memory."""

    def __init__(self, gpu, self_test):
        self.caffe, self.gpu, self.self_test = caffe, gpu, self_test
        self.cudart = None
        if not self_test:
            for name in ("libcudart.so.13", "libcudart.so"):
                try:
                    self.cudart = ctypes.CDLL(name)
                    break
                except OSError:
                    continue

    def cpu(self):
        self.caffe.set_mode_cpu()

    def dev(self):
        if self.self_test:
            self.caffe.set_mode_cpu()
        else:
            self.caffe.set_device(self.gpu)
            self.caffe.set_mode_gpu()

    def used_bytes(self):
        """Device memory in use (cudaMemGetInfo), or None."""
        if self.cudart is None:
            return None
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if self.cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
            return None
        return total.value - free.value


# ---------------------------------------------------------------------------
# Inputs and weights


def fill_random(net, seed=0):
    """He-scaled random weights (activations keep their size through VGG-16),
    bilinear deconvolutions: the FCNs whose trained weights are not here."""
    rng = np.random.default_rng(seed)
    for params in net.params.values():
        w = params[0].data
        fan_in = max(int(np.prod(w.shape[1:])), 1)
        w[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32((2 / fan_in) ** 0.5)
        for b in params[1:]:
            b.data[...] = rng.standard_normal(b.data.shape, dtype=np.float32) * 0.1
    surgery.interp(net)


def model_inputs(model, data):
    """{input blob: 1xCxHxW float32} for a deploy net, from the real images of the
    pack: the VOC demo photo (and for NYUDv2's other inputs, its grey level as a
    depth in millimetres, and the photo again as HHA)."""
    rgb = images.load_photo(data / "voc-demo/image.jpg")
    d = DATASETS[model.eval.dataset]
    out = {}
    for name in [n for n, _ in MODALITIES[model.modality]]:
        if name in ("data", "color"):
            x = images.preprocess(rgb, d.mean) if model.modality != "hha" else \
                (rgb.astype(np.float32) - np.float32(d.extra["hha_mean"])).transpose(2, 0, 1)
        elif name == "depth":
            mm = 500.0 + 40.0 * rgb.mean(axis=2)
            x = (np.log(mm) - d.extra["depth_mean"])[None].astype(np.float32)
        else:
            x = (rgb.astype(np.float32) - np.float32(d.extra["hha_mean"])).transpose(2, 0, 1)
        out[name] = np.ascontiguousarray(x, np.float32)[None]
    return out


# ---------------------------------------------------------------------------
# Parts


def deploy(devices, data, check, models):
    rows = []
    for name in models:
        model = zoo.MODELS[name]
        before = devices.used_bytes()
        net = caffemodel.load_net(model.net("deploy"))
        trained = data / "weights" / f"{name}.caffemodel"
        backbone = data / "weights" / f"{model.backbone}-fcn.caffemodel"
        if trained.is_file():
            caffemodel.copy_weights(net, trained)
        else:
            fill_random(net, seed=len(rows))
            if backbone.is_file():        # SqueezeNet's ImageNet features, random heads
                caffemodel.copy_weights(net, backbone, complete=False)
        inputs = model_inputs(model, data)
        for k, x in inputs.items():
            net.blobs[k].reshape(*x.shape)
        net.reshape()
        outs = {}
        for mode in ("cpu", "dev"):
            getattr(devices, mode)()
            for k, x in inputs.items():
                net.blobs[k].data[...] = x
            t = time.perf_counter()
            net.forward()
            seconds = time.perf_counter() - t
            outs[mode] = ({h: net.blobs[f"score{h.suffix}"].data.copy() for h in model.heads},
                          seconds)
        used = devices.used_bytes()
        row = {"model": name, "weights": "trained" if trained.is_file() else
               "ImageNet backbone, random heads" if backbone.is_file() else "random",
               "input_hw": list(next(iter(inputs.values())).shape[2:]),
               "cpu_s": round(outs["cpu"][1], 3), "gpu_s": round(outs["dev"][1], 4),
               "gpu_memory_mb": None if used is None or before is None
               else round((used - before) / 2 ** 20, 1)}
        for h in model.heads:
            c, g = outs["cpu"][0][h], outs["dev"][0][h]
            rng = float(c.max() - c.min()) or 1.0
            rel = float(np.abs(g - c).max()) / rng
            agree = float((g.argmax(1) == c.argmax(1)).mean())
            row[f"score{h.suffix}"] = {"max_diff_over_range": rel, "argmax_agreement": agree}
            if not (rel <= DEPLOY_TOL and agree >= ARGMAX_AGREE):
                check.fail(f"deploy {name} score{h.suffix}: difference {rel:.2e} of the "
                           f"range, argmax agreement {agree:.5f}")
        say(json.dumps(row))
        rows.append(row)
        devices.cpu()
        del net
    return rows


def without_dropout(proto):
    """The net with its Dropout layers taken out (they run in place: nothing else
    changes); their masks come from the CPU's and the GPU's own generators."""
    keep = [l for l in proto.layer if l.type != "Dropout"]
    del proto.layer[:]
    proto.layer.extend(keep)
    return proto


def make_solver(model, data, tmp, input_net=None):
    """An SGDSolver of the model's solver settings on its training net (the Python
    data layer reading the pack, Dropout out), or on ``input_net``."""
    s = text_format.Parse((model.dir / "solver.prototxt").read_text(),
                          caffe_pb2.SolverParameter())
    net = input_net or without_dropout(model.data_net("train", data_root=data))
    s.train_net = str(tmp / f"{model.name}-train.prototxt")
    Path(s.train_net).write_text(str(net))
    del s.test_net[:]
    del s.test_iter[:]
    s.ClearField("test_interval")
    s.snapshot_prefix = str(tmp / "snap")
    s.display = 0
    path = tmp / f"{model.name}-solver.prototxt"
    path.write_text(str(s))
    return caffe.SGDSolver(str(path))


def sgd(devices, data, check, tmp):
    rows = []
    for name, init in (("voc-fcn32s", None),
                       ("camvid-fcn8s-squeezenet", data / "weights/squeezenet-fcn.caffemodel")):
        model = zoo.MODELS[name]
        weights = tmp / f"{name}-init.caffemodel"
        net = caffemodel.load_net(model.net("deploy"))
        fill_random(net, seed=7)
        if init is not None and init.is_file():
            caffemodel.copy_weights(net, init, complete=False)
        surgery.interp(net)
        net.save(str(weights))
        del net
        runs = {}
        for mode in ("cpu", "dev"):
            getattr(devices, mode)()
            solver = make_solver(model, data, tmp)
            caffemodel.copy_weights(solver.net, weights, complete=False)
            losses, t0 = [], time.perf_counter()
            for _ in range(SGD_ITERS):
                solver.step(1)
                losses.append(float(solver.net.blobs["loss"].data))
            seconds = time.perf_counter() - t0
            runs[mode] = (losses, {k: [b.data.copy() for b in v]
                                   for k, v in solver.net.params.items()}, seconds,
                          list(solver.net.layers[0].ids[:1]))
            del solver
        devices.cpu()
        (lc, wc, sc, _), (lg, wg, sg, _) = runs["cpu"], runs["dev"]
        loss_rel = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(lc, lg))
        w_rel = max(float(np.abs(g - c).max()) / max(float(np.abs(c).max()), 1e-30)
                    for k in wc for c, g in zip(wc[k], wg[k]))
        row = {"model": name, "iterations": SGD_ITERS, "loss_cpu": lc, "loss_gpu": lg,
               "loss_max_rel_diff": loss_rel, "weights_max_diff_over_max": w_rel,
               "cpu_s": round(sc, 2), "gpu_s": round(sg, 2),
               "data_layer": "Python data layer, whole images, batch 1"}
        if not (loss_rel <= 1e-3 and w_rel <= 1e-3 and all(np.isfinite(lg))):
            check.fail(f"sgd {name}: loss differs by {loss_rel:.2e}, weights by {w_rel:.2e}")
        say(json.dumps(row))
        rows.append(row)
    return rows


def timed(fn, reps, sync=lambda: None):
    fn()
    fn()
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def speed(devices, data, check, tmp, self_test):
    out = {}
    hw = (64, 64) if self_test else (500, 500)
    rng = np.random.default_rng(1)
    x = rng.uniform(-120, 130, (1, 3, *hw)).astype(np.float32)
    devices.dev()
    net = caffemodel.load_net(REPO / "voc-fcn8s/deploy.prototxt")
    fill_random(net, seed=3)
    net.blobs["data"].reshape(1, 3, *hw)
    net.reshape()
    net.blobs["data"].data[...] = x
    caffe_s, caffe_all = timed(lambda: net.forward(), 3 if self_test else 10)
    out["fcn8s_forward"] = {"input_hw": list(hw), "caffe_s": caffe_s, "caffe_runs": caffe_all}
    caffe_score = net.blobs["score"].data.copy()
    torch_part(out, net, x, hw, caffe_score, self_test)

    # an FCN-32s SGD iteration at 500x375: Input layers instead of the data layer
    model = zoo.MODELS["voc-fcn32s"]
    thw = (48, 64) if self_test else (375, 500)
    proto = model.net("train")
    d = proto.layer[0]
    d.Clear()
    d.name, d.type = "input", "Input"
    d.top.extend(["data", "label"])
    for dims in ([1, 3, *thw], [1, 1, *thw]):
        d.input_param.shape.add().dim.extend(dims)
    solver = make_solver(model, data, tmp, input_net=proto)
    fill_random(solver.net, seed=5)
    solver.net.blobs["data"].data[...] = rng.uniform(-120, 130, (1, 3, *thw))
    solver.net.blobs["label"].data[...] = rng.integers(0, 21, (1, 1, *thw))
    step_s, step_all = timed(lambda: (solver.step(1), float(solver.net.blobs["loss"].data)),
                             2 if self_test else 5)
    out["fcn32s_sgd_iteration"] = {"input_hw": list(thw), "caffe_s": step_s,
                                   "caffe_runs": step_all}
    torch_train_part(out, solver, proto, tmp, thw, self_test)

    # CamVid training with the data layer: iterations per second, GPU and CPU
    model = zoo.MODELS["camvid-fcn8s-squeezenet"]
    for mode in ("dev", "cpu"):
        getattr(devices, mode)()
        camvid = make_solver(model, data, tmp, input_net=model.data_net("train", data_root=data))
        init = data / "weights/squeezenet-fcn.caffemodel"
        if init.is_file():
            caffemodel.copy_weights(camvid.net, init, complete=False)
        surgery.interp(camvid.net)
        camvid.step(3)
        n = 5 if self_test or mode == "cpu" else 30
        t = time.perf_counter()
        camvid.step(n)
        float(camvid.net.blobs["loss"].data)
        out.setdefault("camvid_training", {})[
            "gpu_it_per_s" if mode == "dev" else "cpu_it_per_s"] = n / (time.perf_counter() - t)
    devices.cpu()
    say(json.dumps({k: {kk: vv for kk, vv in v.items() if "runs" not in kk}
                    for k, v in out.items()}))
    return out


def torch_device(section, self_test):
    """(torch, the device, a function waiting for it) for PyTorch's side of a
    measurement; None, said in ``section``, where PyTorch is not installed."""
    try:
        import torch
    except ImportError as e:
        section["torch"] = f"not measured: {e}"
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if self_test or not torch.cuda.is_available():
        return torch, torch.device("cpu"), (lambda: None)
    return torch, torch.device("cuda"), torch.cuda.synchronize


def torch_part(out, net, x, hw, caffe_score, self_test):
    """PyTorch's forward of the same net and weights on the same device."""
    found = torch_device(out["fcn8s_forward"], self_test)
    if found is None:
        return
    torch, dev, sync = found
    from bench.torch_fcn import TorchNet      # (imports torch)
    tnet = TorchNet(str(REPO / "voc-fcn8s/deploy.prototxt"), net).train(False).to(dev)
    tx = torch.from_numpy(x).to(dev)
    with torch.no_grad():
        t_s, t_all = timed(lambda: tnet(data=tx)["score"], 3 if self_test else 10, sync)
        score = tnet(data=tx)["score"].cpu().numpy()
    rng = float(caffe_score.max() - caffe_score.min()) or 1.0
    out["fcn8s_forward"].update({
        "torch_s": t_s, "torch_runs": t_all,
        "caffe_over_torch": out["fcn8s_forward"]["caffe_s"] / t_s,
        "torch": f"{torch.__version__} on {dev}, fp32, TF32 off",
        "score_max_diff_over_range": float(np.abs(score - caffe_score).max()) / rng})
    if not self_test:
        out["fcn8s_forward"]["torch_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20


def torch_train_part(out, solver, proto, tmp, thw, self_test):
    found = torch_device(out["fcn32s_sgd_iteration"], self_test)
    if found is None:
        return
    torch, dev, sync = found
    from bench.torch_fcn import TorchNet      # (imports torch)
    path = tmp / "fcn32s-input-train.prototxt"
    path.write_text(str(proto))
    tnet = TorchNet(str(path), solver.net).train().to(dev)
    opt = tnet.sgd(base_lr=1e-10, momentum=0.99, weight_decay=5e-4)
    x = torch.from_numpy(solver.net.blobs["data"].data.copy()).to(dev)
    y = torch.from_numpy(solver.net.blobs["label"].data.copy()).to(dev)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = tnet(data=x, label=y)["loss"]
        loss.backward()
        opt.step()
        return float(loss.detach())
    t_s, t_all = timed(step, 2 if self_test else 5, sync)
    out["fcn32s_sgd_iteration"].update({
        "torch_s": t_s, "torch_runs": t_all,
        "caffe_over_torch": out["fcn32s_sgd_iteration"]["caffe_s"] / t_s})


def memory_check(devices, data, check, tmp, self_test):
    """infer.py's memory model against FCN-8s's use at 500x500, and what infer.py
    says of an image too large: one line, exit 2, nothing written."""
    out = {}
    model = zoo.MODELS["voc-fcn8s"]
    path = model.dir / "deploy.prototxt"
    proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    devices.dev()
    before = devices.used_bytes()
    net = caffemodel.load_net(path)
    estimate = memory.memory_model(net, proto, ["data"], gpu=not self_test)
    hw = (64, 64) if self_test else (500, 500)
    net.blobs["data"].reshape(1, 3, *hw)
    net.reshape()
    net.forward()
    used = devices.used_bytes()
    out["fcn8s"] = {"input_hw": list(hw),
                    "model_gb": estimate(*hw)[0] * 4 / 1e9,
                    "weights_gb": sum(b.data.nbytes for v in net.params.values() for b in v) / 1e9,
                    "gpu_used_gb": None if used is None or before is None
                    else (used - before) / 1e9}
    del net
    devices.cpu()
    huge = fake_png(tmp / "huge.png", 60000, 40000)
    big = fake_png(tmp / "big.png", 3000, 3000)
    gpu = [] if self_test else ["--gpu", "0"]
    weights = tmp / "fcn8s-random.caffemodel"
    net = caffemodel.load_net(path)
    fill_random(net)
    net.save(str(weights))
    del net
    for name, image, env in (("60000x40000", huge, {}),
                             ("3000x3000 with FCN_MAX_MEMORY_GB=1", big,
                              {"FCN_MAX_MEMORY_GB": "1"})):
        r = subprocess.run([sys.executable, str(REPO / "infer.py"), str(image), "--model",
                            "voc-fcn8s", "--weights", str(weights), "--out", str(tmp / "o"),
                            *gpu], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env})
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        out[f"too_large_{name}"] = {"exit": r.returncode, "stderr": r.stderr[-600:],
                                    "stdout": r.stdout[-300:]}
        if r.returncode != 2 or len(lines) != 1:
            check.fail(f"memory: infer.py on a {name} image: exit {r.returncode}, "
                       f"{len(lines)} lines on stderr")
    say(json.dumps({k: v for k, v in out.items() if k == "fcn8s"}))
    return out


# ---------------------------------------------------------------------------
# The data the check needs, made here from ../shared (it travels with the tree)


def prepare(dest):
    """voc-demo (image, label), a few CamVid pairs, an SBD-format copy of the VOC demo
    pair for voc-fcn32s's data layer, and the SqueezeNet FCN initialisation."""
    shared = SHARED_DATA
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "voc-demo").mkdir(parents=True)
    for f in ("image.jpg", "label.png"):
        shutil.copy(shared / "voc-demo" / f, dest / "voc-demo" / f)
    sbd = dest / "sbdd/dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    label = np.asarray(Image.open(shared / "voc-demo/label.png"))
    for i in ("2007_000129", "2007_000129b"):
        shutil.copy(shared / "voc-demo/image.jpg", sbd / "img" / f"{i}.jpg")
        scipy.io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {
            "Segmentation": np.where(label == 255, 0, label).astype(np.uint8)}})
    (sbd / "train.txt").write_text("2007_000129\n2007_000129b\n")
    cam = dest / "camvid"
    for split, n in (("train", 8), ("val", 4)):
        names = sorted(p.name for p in (shared / "camvid" / split).iterdir())[:n]
        for sub in (split, f"{split}annot"):
            (cam / sub).mkdir(parents=True)
            for name in names:
                shutil.copy(shared / "camvid" / sub / name, cam / sub / name)
        (cam / f"{split}.txt").write_text("".join(
            f"/SegNet/CamVid/{split}/{n_} /SegNet/CamVid/{split}annot/{n_}\n" for n_ in names))
    (dest / "weights").mkdir()
    tmp = Path(tempfile.mkdtemp())
    squeezenet.decode_to_caffemodel(shared / "squeezenet", tmp / "sq.caffemodel")
    surgery.make_fcn_init("squeezenet", weights=tmp / "sq.caffemodel",
                          out=dest / "weights/squeezenet-fcn.caffemodel")
    shutil.rmtree(tmp)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    say(f"wrote {dest}: {size / 2 ** 20:.1f} MiB")
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="the folder --prepare made")
    p.add_argument("--out", help="folder of gpu-check-<tag>.json")
    p.add_argument("--tag", default="caffe", help="the build checked (its wheel's name)")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--prepare", metavar="DIR", help="make the data the check needs, then stop")
    p.add_argument("--self-test", action="store_true",
                   help="no GPU: the CPU stands in for it, at small sizes (tests the script)")
    p.add_argument("--models", help="deploy nets to check (comma-separated; default all)")
    p.add_argument("--parts", default="deploy,sgd,speed,memory", help="parts to run")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    if not args.data or not args.out:
        raise cli.UserError("give --data (made by --prepare) and --out")
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    if not (data / "voc-demo/image.jpg").is_file():
        raise cli.UserError(f"--data {data} is not what --prepare makes")
    check = Check(out / f"gpu-check-{args.tag}.json", args.tag, args.self_test)
    device = use_device(None, True) if args.self_test else use_device(args.gpu, False)
    check.result["machine"] = {"device": device.record(), "python": platform.python_version(),
                               "caffe": str(Path(caffe.__file__).parent),
                               "build": build_info(), "cpus": os.cpu_count()}
    try:
        import torch
        check.result["machine"]["torch"] = torch.__version__
    except ImportError:
        pass
    check.write()
    devices = Devices(args.gpu, args.self_test)
    models = args.models.split(",") if args.models else list(zoo.MODELS)
    unknown = [m for m in models if m not in zoo.MODELS]
    if unknown:
        raise cli.UserError(f"--models: unknown {', '.join(unknown)}")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    parts = {"deploy": (deploy, devices, data, check, models),
             "sgd": (sgd, devices, data, check, tmp),
             "speed": (speed, devices, data, check, tmp, args.self_test),
             "memory": (memory_check, devices, data, check, tmp, args.self_test)}
    unknown = set(args.parts.split(",")) - set(parts)
    if unknown:
        raise cli.UserError(f"--parts: unknown {', '.join(sorted(unknown))}; parts: "
                            + ", ".join(parts))
    for name in args.parts.split(","):
        check.part(name, *parts[name])
    shutil.rmtree(tmp, ignore_errors=True)
    check.write()
    say(f"{'passed' if check.result['passed'] else 'FAILED'}: {check.path}"
        + "".join(f"\n  {f}" for f in check.result["failures"]))
    return 0 if check.result["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="gpu_check.py"))

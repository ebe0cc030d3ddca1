"""The measurements of the GPU check, one part (or one net) per process, so that a
Caffe abort or a Python error loses only itself and every figure is taken in a
fresh process (GPU memory included). scripts/gpu_check.py runs this for each
installed build of Caffe; it writes its result, as JSON, to --result after every
step, so a part stopped by its time limit keeps what it measured.

    python gpu_parts.py deploy --model NAME --data DIR --result FILE [--stand-in]
    python gpu_parts.py sgd --model NAME ...
    python gpu_parts.py speed ...
    python gpu_parts.py memory ...

deploy   one deploy net of the zoo on the pack's photo: a CPU pass, then every blob
         but the inputs poisoned (NaN) and a pass on the device, compared: every
         value written and finite, the largest difference at most 1e-4 of the
         CPU scores' range, argmax the same on 99.9% of the pixels; the device
         memory the net took (after a warm-up that pays for cuBLAS's handle)
sgd      3 SGD iterations from the same weights and images (the Python data
         layer, whole images, batch 1; Dropout taken out: its masks come from two
         generators), on the CPU and on the device: the losses, and the update
         each learned parameter received (its `diff` after the last step, which
         momentum makes the sum of all three), compared against the update's own
         size and required to be non-zero
speed    FCN-8s forward (500x500) and an FCN-32s SGD iteration (500x375), Caffe
         against PyTorch on the device (fp32, TF32 off): both synchronised the
         same way (cudaDeviceSynchronize), warmed up for a second, alternated,
         medians; CamVid training in iterations per second, device and CPU
memory   infer.py's model of the device's memory against what FCN-8s took at
         500x500 in a fresh process; what infer.py says of an image too large
         (one line, exit 2)

--stand-in: no GPU; the CPU takes the device's place (small sizes for speed), and
memory is the process's resident size. Exit 0 when the part ran to its end
(what it found is in the result's "failures"); anything else is a crash.

$FCN_GPU_CHECK_FAULT (tests only) plants faults the check must catch, comma-separated:
unwritten:MODEL (the device pass of MODEL skips its last layer), update:MODEL (the
device's SGD runs at 1.5 times the learning rate), abort:PART (Caffe aborts in that
part after its first measurement).
"""
import argparse
import ctypes
import json
import os
import platform
import resource
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

from fcn import caffemodel, images, memory, zoo  # noqa: E402
from fcn.builder import MODALITIES  # noqa: E402
from fcn.datasets import DATASETS  # noqa: E402
from fcn.surgery import interp  # noqa: E402
from fcn.timing import alternate, random_weights  # noqa: E402

DEPLOY_TOL, ARGMAX_AGREE = 1e-4, 0.999
SGD_ITERS, SGD_TOL = 3, 1e-3
TORCH_TOL = 1e-3          # PyTorch's scores against Caffe's (same weights, fp32)
SQUEEZENET_INIT = "weights/squeezenet-fcn.caffemodel"


def say(msg):
    print(msg, flush=True)


def faults():
    """The planted faults ($FCN_GPU_CHECK_FAULT): {kind: set of targets}."""
    out = {}
    for item in filter(None, os.environ.get("FCN_GPU_CHECK_FAULT", "").split(",")):
        kind, _, target = item.partition(":")
        out.setdefault(kind, set()).add(target)
    return out


def planted(kind, target):
    return target in faults().get(kind, ())


def tiny_net(tmp):
    """A convolution and an inner product on a 1x3x16x16 input."""
    n = caffe_pb2.NetParameter()
    text_format.Parse('force_backward: true '
                      'layer { name: "x" type: "Input" top: "x" '
                      '  input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } } '
                      'layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
                      '  convolution_param { num_output: 4 kernel_size: 3 '
                      '    weight_filler { type: "gaussian" std: 0.1 } } } '
                      'layer { name: "f" type: "InnerProduct" bottom: "c" top: "f" '
                      '  inner_product_param { num_output: 2 '
                      '    weight_filler { type: "gaussian" std: 0.1 } } }', n)
    path = Path(tmp) / "tiny.prototxt"
    path.write_text(str(n))
    return caffe.Net(str(path), caffe.TEST)


def caffe_abort(tmp):
    """What a fault inside Caffe looks like: a CHECK fails, glog aborts the process."""
    say("planted fault: Caffe aborts here")
    tiny_net(tmp).blobs["x"].reshape(1, -1, 4, 4)


class Result:
    """The part's result so far, rewritten (atomically) after every step."""

    def __init__(self, path, **fields):
        self.path = Path(path)
        self.data = {**fields, "failures": [], "done": False}
        self.write()

    def __setitem__(self, key, value):
        self.data[key] = value
        self.write()

    def fail(self, what):
        self.data["failures"].append(what)
        say(f"FAIL {what}")
        self.write()

    def write(self):
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float) + "\n")
        os.replace(tmp, self.path)


class Device:
    """The device under test (GPU 0; with --stand-in, the CPU) beside the CPU, its
    synchronisation and the memory in use on it."""

    def __init__(self, stand_in, gpu=0):
        self.stand_in, self.gpu = stand_in, gpu
        self.cudart = None
        if not stand_in:
            self.cudart = ctypes.CDLL("libcudart.so.13")   # the one Caffe loaded
            caffe.set_device(gpu)

    @property
    def measured_as(self):
        return "process resident size (the CPU stands in)" if self.stand_in else \
            "cudaMemGetInfo (device memory in use)"

    def cpu(self):
        caffe.set_mode_cpu()

    def dev(self):
        if self.stand_in:
            caffe.set_mode_cpu()
        else:
            caffe.set_mode_gpu()

    def sync(self):
        if self.cudart is not None:
            err = self.cudart.cudaDeviceSynchronize()
            if err:
                raise RuntimeError(f"cudaDeviceSynchronize: CUDA error {err}")

    def used_bytes(self):
        if self.stand_in:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        err = self.cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
        if err:
            raise RuntimeError(f"cudaMemGetInfo: CUDA error {err}")
        return total.value - free.value

    def warm_up(self, tmp):
        """A small net forward and backward on the device: cuBLAS's handle and
        workspace, cuRAND's generator, so they are not counted to the first net."""
        self.dev()
        net = tiny_net(tmp)
        net.blobs["x"].data[...] = 1.0
        net.forward()
        net.blobs["f"].diff[...] = 1.0
        net.backward()
        self.sync()
        del net


# ---------------------------------------------------------------------------
# Weights and inputs


def weigh(net, model, data, seed):
    """The pack's trained weights of the model, else random ones with SqueezeNet's
    ImageNet features where the net has them; says which."""
    trained = data / "weights" / f"{model.name}.caffemodel"
    if trained.is_file():
        caffemodel.copy_weights(net, trained)
        return "trained"
    random_weights(net, seed)
    if model.backbone == "squeezenet" and (data / SQUEEZENET_INIT).is_file():
        caffemodel.copy_weights(net, data / SQUEEZENET_INIT, complete=False)
        return "ImageNet backbone, random heads"
    return "random"


def model_inputs(model, data):
    """{input blob: 1xCxHxW float32} for a deploy net, from the pack's photo: for
    NYUDv2's other inputs, its grey level as a depth in millimetres (log, minus the
    depth mean), and the photo again as HHA (minus the HHA mean)."""
    rgb = images.load_photo(data / "voc-demo/image.jpg")
    d = DATASETS[model.eval.dataset]
    hha = (rgb.astype(np.float32) - np.float32(d.extra.get("hha_mean", 0))).transpose(2, 0, 1)
    out = {}
    for name in [n for n, _ in MODALITIES[model.modality]]:
        if name == "depth":
            mm = 500.0 + 40.0 * rgb.mean(axis=2)
            x = (np.log(mm) - d.extra["depth_mean"])[None]
        elif name == "hha" or model.modality == "hha":
            x = hha
        else:
            x = images.preprocess(rgb, d.mean)
        out[name] = np.ascontiguousarray(x, np.float32)[None]
    return out


def learned(proto):
    """{layer: [lr_mult of each param]} of a net's layers (1 where unset)."""
    return {l.name: [p.lr_mult for p in l.param] for l in proto.layer}


# ---------------------------------------------------------------------------
# Parts


def deploy(dev, data, res, tmp, name):
    model = zoo.MODELS[name]
    dev.warm_up(tmp)
    before = dev.used_bytes()
    dev.cpu()
    net = caffemodel.load_net(model.net("deploy"))
    res["weights"] = weigh(net, model, data, seed=sum(map(ord, name)))
    inputs = model_inputs(model, data)
    for k, x in inputs.items():
        net.blobs[k].reshape(*x.shape)
    net.reshape()
    scores = [f"score{h.suffix}" for h in model.heads]

    def run(end):
        for k, x in inputs.items():
            net.blobs[k].data[...] = x
        dev.sync()
        t = time.perf_counter()
        net._forward(0, end)
        dev.sync()
        return time.perf_counter() - t

    last = len(net.layers) - 1
    cpu_s = run(last)
    want = {s: net.blobs[s].data.copy() for s in scores}
    for k, b in net.blobs.items():           # what the device does not write stays NaN
        if k not in inputs:
            b.data[...] = np.nan
    dev.dev()
    dev_s = run(last - 1 if planted("unwritten", name) else last)
    used = dev.used_bytes()
    if planted("abort", "deploy"):
        caffe_abort(tmp)
    row = {"model": name, "weights": res.data["weights"],
           "input_hw": list(next(iter(inputs.values())).shape[2:]),
           "cpu_s": round(cpu_s, 3), "device_first_forward_s": round(dev_s, 4),
           "memory_mb": round((used - before) / 2 ** 20, 1), "memory_measured_as":
           dev.measured_as}
    for s in scores:
        c, g = want[s].astype(np.float64), net.blobs[s].data.astype(np.float64)
        written = float(np.isfinite(g).mean())
        rng = float(c.max() - c.min()) or 1.0
        rel = float(np.abs(g - c).max()) / rng if written == 1.0 else None
        agree = float((g.argmax(1) == c.argmax(1)).mean())
        row[s] = {"written_finite": written, "max_diff_over_range": rel,
                  "argmax_agreement": agree}
        if written < 1.0:
            res.fail(f"deploy {name} {s}: {1 - written:.1%} of the device's values were "
                     "never written or are not finite")
        elif not (rel <= DEPLOY_TOL and agree >= ARGMAX_AGREE):      # (NaN fails too)
            res.fail(f"deploy {name} {s}: difference {rel:.2e} of the range, argmax "
                     f"agreement {agree:.5f}")
    res["row"] = row
    say(json.dumps(row))
    dev.cpu()


def without_dropout(proto):
    """The net with its Dropout layers taken out (they run in place: nothing else
    changes); their masks come from the CPU's and the GPU's own generators."""
    keep = [l for l in proto.layer if l.type != "Dropout"]
    del proto.layer[:]
    proto.layer.extend(keep)
    return proto


def make_solver(model, data, tmp, net_proto=None, lr_scale=1.0):
    """An SGDSolver with the model's solver settings on its training net (the Python
    data layer reading the pack, Dropout out), or on ``net_proto``."""
    s = text_format.Parse((model.dir / "solver.prototxt").read_text(),
                          caffe_pb2.SolverParameter())
    net = net_proto or without_dropout(model.data_net("train", data_root=data))
    s.train_net = str(tmp / f"{model.name}-train.prototxt")
    Path(s.train_net).write_text(str(net))
    del s.test_net[:]
    del s.test_iter[:]
    s.ClearField("test_interval")
    s.snapshot = 0
    s.snapshot_prefix = str(tmp / "snap")
    s.display = 0
    s.base_lr *= lr_scale
    path = tmp / f"{model.name}-solver.prototxt"
    path.write_text(str(s))
    return caffe.SGDSolver(str(path))


def sgd(dev, data, res, tmp, name):
    model = zoo.MODELS[name]
    init = tmp / f"{name}-init.caffemodel"
    net = caffemodel.load_net(model.net("deploy"))
    res["weights"] = weigh(net, model, data, seed=7)
    net.save(str(init))
    del net
    runs = {}
    for mode in ("cpu", "dev"):
        getattr(dev, mode)()
        solver = make_solver(model, data, tmp, lr_scale=1.5 if mode == "dev" and
                             planted("update", name) else 1.0)
        caffemodel.copy_weights(solver.net, init, complete=False)
        lr = learned(without_dropout(model.data_net("train", data_root=data)))
        losses, t0 = [], time.perf_counter()
        for _ in range(SGD_ITERS):
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"].data))
        dev.sync()
        runs[mode] = {"losses": losses, "seconds": time.perf_counter() - t0,
                      "updates": {(k, i): b.diff.astype(np.float64)
                                  for k, v in solver.net.params.items()
                                  for i, b in enumerate(v)
                                  if (lr[k][i] if i < len(lr[k]) else 1) > 0}}
        del solver
    dev.cpu()
    c, g = runs["cpu"], runs["dev"]
    loss_rel = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(c["losses"], g["losses"]))
    update_rel, zero = {}, []
    for key, uc in c["updates"].items():
        size = float(np.abs(uc).max())
        if size == 0:
            zero.append(f"{key[0]}[{key[1]}]")
            continue
        update_rel[f"{key[0]}[{key[1]}]"] = float(np.abs(g["updates"][key] - uc).max()) / size
    worst = max(update_rel, key=update_rel.get) if update_rel else None
    row = {"model": name, "iterations": SGD_ITERS, "weights": res.data["weights"],
           "data_layer": "Python data layer, whole images, batch 1",
           "loss_cpu": c["losses"], "loss_device": g["losses"], "loss_max_rel_diff": loss_rel,
           "learned_params": len(c["updates"]), "params_without_update": zero,
           "update_max_diff_over_size": update_rel[worst] if worst else None,
           "update_worst_param": worst,
           "cpu_s": round(c["seconds"], 2), "device_s": round(g["seconds"], 2)}
    res["row"] = row
    if not all(np.isfinite(g["losses"])) or loss_rel > SGD_TOL:
        res.fail(f"sgd {name}: losses {g['losses']} on the device, {c['losses']} on the CPU")
    if zero or not update_rel:
        res.fail(f"sgd {name}: no update reached {', '.join(zero) or 'any parameter'}")
    elif update_rel[worst] > SGD_TOL:
        res.fail(f"sgd {name}: the update of {worst} differs from the CPU's by "
                 f"{update_rel[worst]:.2e} of its size")
    say(json.dumps(row))


def torch_on(dev, section):
    """(torch, its device, fcn/torch_net.py) beside Caffe's device, or None
    (said in ``section``)."""
    try:
        import torch
    except ImportError as e:
        section["torch"] = f"not measured: {e}"
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from fcn import torch_net      # (imports torch)
    if dev.stand_in:
        return torch, torch.device("cpu"), torch_net
    if not torch.cuda.is_available():
        section["torch"] = (f"not measured: torch {torch.__version__} sees no GPU "
                            "(torch.cuda.is_available() is False)")
        return None
    return torch, torch.device("cuda", dev.gpu), torch_net


def speed(dev, data, res, tmp):
    rounds, reps = (2, 2) if dev.stand_in else (6, 5)

    def timing(rounds):
        return f"medians of {rounds}x{reps} calls, alternated, " + (
            "on the CPU (standing in)" if dev.stand_in else
            "each synchronised (cudaDeviceSynchronize)") + ", after 1 s of warm-up"
    speed_forward(dev, res, rounds, reps, timing(rounds))
    if planted("abort", "speed"):
        caffe_abort(tmp)
    sgd_rounds = max(rounds // 2, 2)
    speed_sgd(dev, data, res, tmp, sgd_rounds, reps, timing(sgd_rounds))
    speed_camvid(dev, data, res, tmp)


def speed_forward(dev, res, rounds, reps, timing):
    """FCN-8s forward, Caffe against PyTorch."""
    rng = np.random.default_rng(1)
    hw = (64, 64) if dev.stand_in else (500, 500)
    dev.dev()
    prototxt = REPO / "voc-fcn8s/deploy.prototxt"
    net = caffemodel.load_net(prototxt)
    random_weights(net, seed=3)
    net.blobs["data"].reshape(1, 3, *hw)
    net.reshape()
    x = rng.uniform(-120, 130, (1, 3, *hw)).astype(np.float32)
    net.blobs["data"].data[...] = x
    last = len(net.layers) - 1
    sec = {"input_hw": list(hw), "timing": timing}
    fns = {"caffe": lambda: net._forward(0, last)}
    found = torch_on(dev, sec)
    if found:
        torch, tdev, torch_net = found
        tnet = torch_net.TorchNet(str(prototxt), net).train(False).to(tdev)
        tx = torch.from_numpy(x).to(tdev)

        def tforward():
            with torch.no_grad():
                return tnet(data=tx)["score"]
        fns["torch"] = tforward
    med, runs = alternate(fns, dev.sync, rounds, reps)
    sec.update({"caffe_s": med["caffe"], "caffe_runs": runs["caffe"]})
    if found:
        score = tforward().cpu().numpy()
        want = net.blobs["score"].data
        rel = float(np.abs(score - want).max()) / (float(want.max() - want.min()) or 1.0)
        sec.update({"torch_s": med["torch"], "torch_runs": runs["torch"],
                    "caffe_over_torch": med["caffe"] / med["torch"],
                    "torch": f"{torch.__version__} on {tdev}, fp32, TF32 off",
                    "score_max_diff_over_range": rel})
        if not rel <= TORCH_TOL:
            res.fail(f"speed: PyTorch's FCN-8s scores differ from Caffe's by {rel:.2e} of the "
                     "range (not the same net?)")
    res["fcn8s_forward"] = sec
    say(json.dumps({"fcn8s_forward": {k: v for k, v in sec.items() if "runs" not in k}}))


def speed_sgd(dev, data, res, tmp, rounds, reps, timing):
    """An FCN-32s SGD iteration (Input layers in place of the data layer), Caffe
    against PyTorch."""
    rng = np.random.default_rng(2)
    model = zoo.MODELS["voc-fcn32s"]
    thw = (48, 64) if dev.stand_in else (375, 500)
    proto = model.net("train")
    d = proto.layer[0]
    d.Clear()
    d.name, d.type = "input", "Input"
    d.top.extend(["data", "label"])
    for dims in ([1, 3, *thw], [1, 1, *thw]):
        d.input_param.shape.add().dim.extend(dims)
    path = tmp / "fcn32s-input-train.prototxt"
    path.write_text(str(proto))
    solver = make_solver(model, data, tmp, net_proto=proto)
    random_weights(solver.net, seed=5)
    solver.net.blobs["data"].data[...] = rng.uniform(-120, 130, (1, 3, *thw))
    solver.net.blobs["label"].data[...] = rng.integers(0, 21, (1, 1, *thw))
    sec = {"input_hw": list(thw), "timing": timing,
           "step": "forward, backward, update (momentum 0.99, weight decay 5e-4); the loss "
                   "read back once, as Caffe's solver does"}
    fns = {"caffe": lambda: solver.step(1)}
    found = torch_on(dev, sec)
    if found:
        torch, tdev, torch_net = found
        tnet = torch_net.TorchNet(str(path), solver.net).train().to(tdev)
        step = torch_net.sgd_step(tnet, {
            k: torch.from_numpy(solver.net.blobs[k].data.copy()).to(tdev)
            for k in ("data", "label")})
        fns["torch"] = lambda: float(step().detach())
    med, runs = alternate(fns, dev.sync, rounds, reps)
    sec.update({"caffe_s": med["caffe"], "caffe_runs": runs["caffe"]})
    if found:
        sec.update({"torch_s": med["torch"], "torch_runs": runs["torch"],
                    "caffe_over_torch": med["caffe"] / med["torch"],
                    "torch": f"{torch.__version__} on {tdev}, fp32, TF32 off"})
    res["fcn32s_sgd_iteration"] = sec
    say(json.dumps({"fcn32s_sgd_iteration": {k: v for k, v in sec.items() if "runs" not in k}}))


def speed_camvid(dev, data, res, tmp):
    """CamVid training through the data layer: iterations per second, device and CPU."""
    model = zoo.MODELS["camvid-fcn8s-squeezenet"]
    sec = {}
    for mode in ("dev", "cpu"):
        getattr(dev, mode)()
        camvid = make_solver(model, data, tmp)
        init = data / SQUEEZENET_INIT
        if init.is_file():
            caffemodel.copy_weights(camvid.net, init, complete=False)
        interp(camvid.net)
        camvid.step(2)
        n = 5 if dev.stand_in or mode == "cpu" else 30
        dev.sync()
        t = time.perf_counter()
        camvid.step(n)
        dev.sync()
        sec["device_it_per_s" if mode == "dev" else "cpu_it_per_s"] = n / (time.perf_counter() - t)
        sec["device_iterations" if mode == "dev" else "cpu_iterations"] = n
        del camvid
    sec["timing"] = "iterations through the data layer after 2 of warm-up, synchronised"
    dev.cpu()
    sec["cpu_threads"] = os.cpu_count()
    res["camvid_training"] = sec
    say(json.dumps({"camvid_training": sec}))


def memory_part(dev, data, res, tmp):
    """infer.py's memory model against FCN-8s's use at 500x500, and what infer.py
    says of an image too large: one line, exit 2, nothing written."""
    model = zoo.MODELS["voc-fcn8s"]
    path = model.dir / "deploy.prototxt"
    proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    dev.warm_up(tmp)
    before = dev.used_bytes()
    net = caffemodel.load_net(path)
    estimate = memory.memory_model(net, proto, ["data"], gpu=not dev.stand_in)
    hw = (500, 500)
    net.blobs["data"].reshape(1, 3, *hw)
    net.reshape()
    net.forward()
    dev.sync()
    used = dev.used_bytes() - before
    model_gb = estimate(*hw)[0] * 4 / 1e9
    res["fcn8s"] = {"input_hw": list(hw), "model_gb": model_gb,
                    "weights_gb": sum(b.data.nbytes for v in net.params.values()
                                      for b in v) / 1e9,
                    "used_gb": used / 1e9, "used_measured_as": dev.measured_as,
                    "model_over_used": model_gb / (used / 1e9) if used > 0 else None}
    say(json.dumps({"fcn8s": res.data["fcn8s"]}))
    ratio = res.data["fcn8s"]["model_over_used"]
    if not dev.stand_in and ratio is not None and ratio < 1.0:
        res.fail(f"memory: infer.py's model of the GPU's memory says {model_gb:.2f} GB for "
                 f"FCN-8s at 500x500, less than the {used / 1e9:.2f} GB it took: images it lets "
                 "through could run out of memory")
    del net
    dev.cpu()
    if planted("abort", "memory"):
        caffe_abort(tmp)
    huge = images.header_only_png(tmp / "huge.png", 60000, 40000)
    big = images.header_only_png(tmp / "big.png", 3000, 3000)
    weights = tmp / "fcn8s-random.caffemodel"
    net = caffemodel.load_net(path)
    random_weights(net)
    net.save(str(weights))
    del net
    flags = ["--cpu"] if dev.stand_in else ["--gpu", str(dev.gpu)]
    for name, image, env in (("60000x40000", huge, {}),
                             ("3000x3000 with FCN_MAX_MEMORY_GB=1", big,
                              {"FCN_MAX_MEMORY_GB": "1"})):
        out = tmp / "infer-out"
        r = subprocess.run([sys.executable, str(REPO / "infer.py"), str(image), "--model",
                            "voc-fcn8s", "--weights", str(weights), "--out", str(out), *flags],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env})
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        res[f"too_large_{name}"] = {"exit": r.returncode, "stderr": r.stderr[-600:],
                                    "stdout": r.stdout[-300:]}
        wrote = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
        if r.returncode != 2 or len(lines) != 1 or wrote:
            res.fail(f"memory: infer.py on a {name} image: exit {r.returncode}, {len(lines)} "
                     f"lines on stderr{', wrote ' + ', '.join(wrote) if wrote else ''}")


PARTS = {"deploy": deploy, "sgd": sgd, "speed": speed, "memory": memory_part}


def main(argv=None):
    p = argparse.ArgumentParser(prog="gpu_parts.py", description=__doc__.split("\n")[0])
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--data", required=True, type=Path, help="the pack's data folder")
    p.add_argument("--result", required=True, type=Path, help="the JSON file to write")
    p.add_argument("--model", help="the net (deploy, sgd)")
    p.add_argument("--stand-in", action="store_true", help="no GPU: the CPU stands in")
    p.add_argument("--gpu", type=int, default=0)
    args = p.parse_args(argv)
    res = Result(args.result, part=args.part, model=args.model, pid=os.getpid(),
                 python=platform.python_version())
    dev = Device(args.stand_in, args.gpu)
    extra = (args.model,) if args.part in ("deploy", "sgd") else ()
    with tempfile.TemporaryDirectory(prefix="gpu-part-") as tmp:
        PARTS[args.part](dev, args.data.resolve(), res, Path(tmp), *extra)
    res["done"] = True
    sys.stdout.flush()
    # Caffe's GPU memory and handles are freed by C++ exit handlers, which abort the
    # process if the CUDA runtime is gone first: the part is done and written, end here.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

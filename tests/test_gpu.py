"""The CUDA build against the CPU: every deploy net of the zoo on the VOC demo image,
forward and backward. Needs a CUDA build of Caffe and a GPU; skips loudly otherwise
(README: GPU). On a CPU build, the device choice is checked instead."""
import numpy as np
import pytest
from PIL import Image

from fcn import device as fcn_device, zoo
from fcn.errors import UserError
from conftest import REPO, fill_random

CUDA = bool(fcn_device.build_info().get("cuda"))
GPUS = fcn_device.visible_gpus() if CUDA else []
needs_gpu = pytest.mark.skipif(not GPUS, reason="NO GPU: " + (
    "no GPU answers nvidia-smi" if CUDA else "this Caffe is built CPU-only (FCN_GPU=1 make setup)"))


def test_device_choice_on_this_build():
    device = fcn_device.use_device(None, True)
    assert str(device) == "device: CPU (--cpu)" and device.record()["kind"] == "CPU"
    if not CUDA:
        assert str(fcn_device.use_device(None, False)) == "device: CPU"
        with pytest.raises(UserError, match="built CPU-only"):
            fcn_device.use_device(0, False)
    else:
        with pytest.raises(UserError, match=r"GPU\(s\) answer here"):
            fcn_device.use_device(len(GPUS), False)


def run(net, image, gpu):
    import caffe
    if gpu:
        caffe.set_device(0)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net.blobs["data"].reshape(*image.shape)
    net.blobs["data"].data[...] = image
    net.forward()
    out = {k: v.data.copy() for k, v in net.blobs.items() if k.startswith("score")}
    for k in out:
        net.blobs[k].diff[...] = np.sign(out[k])
    net.backward()
    grads = {k: p[0].diff.copy() for k, p in net.params.items()}
    return out, grads


@needs_gpu
@pytest.mark.parametrize("name", [m for m in zoo.MODELS
                                  if zoo.MODELS[m].modality == "color"])
def test_deploy_net_gpu_matches_cpu(name, shared_data):
    import caffe
    rgb = np.asarray(Image.open(shared_data / "voc-demo/image.jpg").convert("RGB"), np.float32)
    image = (rgb[:, :, ::-1] - (104.0, 116.7, 122.7)).transpose(2, 0, 1)[None].copy()
    net = caffe.Net(str(REPO / name / "deploy.prototxt"), caffe.TEST)
    fill_random(net, seed=1)
    (cs, cg), (gs, gg) = zip(run(net, image, False), run(net, image, True))
    caffe.set_mode_cpu()
    for k in cs:
        top = np.abs(cs[k]).max()
        assert np.abs(gs[k] - cs[k]).max() <= 1e-4 * top, k
        agree = (gs[k].argmax(1) == cs[k].argmax(1)).mean()
        assert agree >= 0.9999, (k, agree)
    for k in cg:
        assert np.abs(gg[k] - cg[k]).max() <= 1e-3 * max(np.abs(cg[k]).max(), 1e-12), k


# ---------------------------------------------------------------------------
# Without a GPU: the device flags of every command, what the records say, the GPU's
# memory model, and the GPU check's own script


import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


@pytest.mark.parametrize("command", [
    ["reference.py", "export", "voc-fcn-alexnet", "--weights", "w", "--image", "i.jpg",
     "--out", "r.npz"],
    ["scripts/demo.py", "--iters", "1"],
    ["bench/camvid.py", "--minutes", "1"],
    ["bench/speed.py", "--parts", "forward"],
    ["reproduce.py", "voc", "--dry-run"],
    ["infer.py", "x.jpg"],
    ["score.py", "voc-fcn8s", "--weights", "w"],
    ["voc-fcn8s/solve.py"],
])
def test_every_command_takes_the_device_flags(command, tmp_path):
    """--gpu N and --cpu everywhere; on a CPU build --gpu is one line (exit 2) before
    any work, as is a GPU that does not answer."""
    r = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:], "--gpu", "7"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert ("built CPU-only" if not CUDA else "GPU(s) answer here") in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())                       # nothing written
    r = subprocess.run([sys.executable, str(REPO / command[0]), "--help"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    if command[0] != "reference.py":
        assert "--gpu" in r.stdout and "--cpu" in r.stdout, r.stdout


def test_the_device_goes_into_the_reference_archive(alexnet_weights, shared_data, tmp_path):
    import reference
    r = subprocess.run([sys.executable, str(REPO / "reference.py"), "export", "voc-fcn-alexnet",
                        "--weights", alexnet_weights, "--image",
                        shared_data / "voc-demo/image.jpg", "--out", tmp_path / "r.npz", "--cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("device: CPU")
    meta = json.loads(str(reference.load(tmp_path / "r.npz")["meta"]))
    assert meta["caffe"]["mode"] == "CPU" and meta["caffe"]["device"]["kind"] == "CPU"
    assert meta["caffe"]["device"]["caffe_cuda"] == CUDA
    assert meta["conv_forward"] == "im2col + GEMM"


def test_the_gpu_memory_model_holds_whole_column_buffers_and_the_weights():
    """On the GPU the column buffer is not cut into bands (patch 0017), there is no
    Winograd buffer, and the weights reach the GPU with the first pass: FCN-8s at
    500x500 needs conv1_2's whole unfolded input, 64 x 3 x 3 x 698 x 698 values."""
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    from fcn import caffemodel, memory
    path = REPO / "voc-fcn8s/deploy.prototxt"
    proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    net = caffemodel.load_net(path)
    cpu_total, _ = memory.forward_elements(net, proto, ["data"], 500, 500)
    gpu_total, gpu_biggest = memory.forward_elements(net, proto, ["data"], 500, 500, gpu=True)
    shapes = {k: tuple(v.shape) for k, v in net.blobs.items()}
    assert max(memory.layer_buffers(proto, shapes, banded=False).values()) == 64 * 9 * 698 * 698
    assert gpu_total > cpu_total and gpu_biggest >= 64 * 9 * 698 * 698
    weights = sum(b.data.size for v in net.params.values() for b in v)
    cpu_model = memory.memory_model(net, proto, ["data"])
    gpu_model = memory.memory_model(net, proto, ["data"], gpu=True)
    assert abs(gpu_model(500, 500)[0] - (gpu_total + weights)) <= 0.02 * gpu_total
    assert gpu_model(500, 500)[0] > cpu_model(500, 500)[0]

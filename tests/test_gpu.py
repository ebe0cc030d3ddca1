"""The CUDA build against the CPU: every deploy net of the zoo on the VOC demo image,
forward and backward. Needs a CUDA build of Caffe and a GPU; skips loudly otherwise
(README: GPU). On a CPU build, the device choice is checked instead."""
import numpy as np
import pytest
from PIL import Image

import cli
import nets
from conftest import REPO, fill_random

CUDA = bool(cli.build_info().get("cuda"))
GPUS = cli.visible_gpus() if CUDA else []
needs_gpu = pytest.mark.skipif(not GPUS, reason="NO GPU: " + (
    "no GPU answers nvidia-smi" if CUDA else "this Caffe is built CPU-only (FCN_GPU=1 make setup)"))


def test_device_choice_on_this_build():
    line = cli.use_device(None, True)
    assert line.startswith("device: CPU")
    if not CUDA:
        assert cli.use_device(None, False) == "device: CPU"
        with pytest.raises(cli.UserError, match="built CPU-only"):
            cli.use_device(0, False)
    else:
        with pytest.raises(cli.UserError, match=r"GPU\(s\) answer here"):
            cli.use_device(len(GPUS), False)


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
@pytest.mark.parametrize("name", [m for m in nets.MODELS
                                  if nets.MODELS[m].modality == "color"])
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

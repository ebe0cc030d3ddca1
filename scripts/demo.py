"""make demo, for now: a smoke forward of a small FCN through Caffe.

The real demo (SqueezeNet transplanted into an FCN and fine-tuned on CamVid) is
not built yet; this only proves the installed Caffe runs an FCN-shaped net
(convolution with 100 px padding, pooling, score, bilinear-sized deconvolution,
coord_map crop) on an image, end to end.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from caffe.coord_map import crop  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main():
    shared = Path(os.environ.get("FCN_SHARED", REPO.parent / "shared"))
    img_path = shared / "data" / "voc-demo" / "image.jpg"
    if img_path.is_file():
        img = np.asarray(Image.open(img_path).convert("RGB"), dtype=np.float32)
        source = str(img_path)
    else:
        img = np.random.RandomState(0).uniform(0, 255, (334, 500, 3)).astype(np.float32)
        source = f"a random 500x334 image ({img_path} not found)"
    x = (img[:, :, ::-1] - np.array([104.00699, 116.66877, 122.67892], np.float32))
    x = x.transpose(2, 0, 1)[None]

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(x.shape)))
    n.conv1 = L.Convolution(n.data, kernel_size=3, pad=100, num_output=8,
                            weight_filler=dict(type="gaussian", std=0.01))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.score = L.Convolution(n.pool1, kernel_size=1, num_output=21,
                            weight_filler=dict(type="gaussian", std=0.01))
    n.upscore = L.Deconvolution(n.score, convolution_param=dict(
        num_output=21, kernel_size=4, stride=2, bias_term=False,
        weight_filler=dict(type="gaussian", std=0.01)))
    n.out = crop(n.upscore, n.data)
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(str(n.to_proto()))
    caffe.set_mode_cpu()
    net = caffe.Net(f.name, caffe.TEST)
    os.unlink(f.name)
    t = time.time()
    out = net.forward(data=x)["out"]
    print(f"demo (smoke test only; the CamVid demo is not implemented yet): "
          f"a random-weight FCN ran on {source} in {time.time() - t:.2f} s, "
          f"input HxW {x.shape[2]}x{x.shape[3]} -> score map {out.shape[2]}x{out.shape[3]} "
          f"x {out.shape[1]} classes")
    return 0 if out.shape[2:] == x.shape[2:] else 1


if __name__ == "__main__":
    sys.exit(main())

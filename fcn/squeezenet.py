"""The ImageNet-trained SqueezeNet v1.0 of the CPU-scale method, from its Deep
Compression file (Han et al.) into a caffemodel; its classifier on photos.

The source holds, for the 26 convolution layers in the order of its deploy
prototxt: first one uint32 per layer, the number of non-zero weights; then per
layer a float32[256] codebook, the float32 biases, one uint8 codebook index per
non-zero weight, and the gaps between non-zero positions as 4-bit values, two per
byte, low nibble first, padded to a whole byte. The k-th non-zero weight sits at
flat position cumsum(gap + 1) - 1 of the layer's (out, in, kh, kw) array. Every
byte is accounted for: a file that is shorter or longer than the layers need is
refused with both numbers. The classifier reads 227x227 BGR images minus the mean
(104, 117, 123). `python prepare.py get weights squeezenet` makes the caffemodel
and its FCN initialisation.
"""

import caffe
import numpy as np
from PIL import Image

from fcn import caffemodel, files, zoo
from fcn.datasets import data_root
from fcn.errors import UserError
from fcn.images import load_photo, preprocess

COMPRESSED = "compressed_SqueezeNet.net"
PROTOTXT = "SqueezeNet_deploy.prototxt"
MEAN_BGR = (104.0, 117.0, 123.0)
CODEBOOK = 256


class CompressedError(UserError):
    """A compressed file that does not decode; one line."""


def source_dir(root=None):
    """The folder with the compressed file: squeezenet/ under the data root
    (``root``, a command's --data-root, else as fcn.datasets.data_root decides)."""
    d = data_root(root, needs=["squeezenet"]) / "squeezenet"
    if (d / COMPRESSED).is_file():
        return d
    raise UserError(f"{COMPRESSED} not found in {d}; it is the Deep Compression "
                        "SqueezeNet v1.0 (github.com/songhan/SqueezeNet-Deep-Compression), "
                        "with SqueezeNet_deploy.prototxt beside it")


def cpu_scale_data():
    """The data root of the CPU-scale method (make demo, bench/camvid.py): CamVid and
    the compressed SqueezeNet, found by fcn.datasets.data_root; one line naming what is
    missing and how to get it."""
    data = data_root(needs=[("camvid", "train"), ("camvid", "val"), "squeezenet"])
    camvid, sq = data / "camvid", data / "squeezenet"
    missing = []
    if not (camvid / "train.txt").is_file() or not (camvid / "val.txt").is_file():
        missing.append(f"CamVid (train + val) in {camvid}: python prepare.py get camvid "
                       f"--data-root {data}")
    if not (sq / COMPRESSED).is_file():
        missing.append(f"{COMPRESSED} and {PROTOTXT} in {sq}: from "
                       "github.com/songhan/SqueezeNet-Deep-Compression")
    if missing:
        raise UserError("data missing (set FCN_DATA to a folder holding them): "
                            + "; ".join(missing))
    return data


def layout(layers):
    """Bytes each layer takes: [(name, weights, biases)] -> expected total given nnz."""
    def total(nnz):
        return 4 * len(layers) + sum(4 * CODEBOOK + 4 * b + n + (n + 1) // 2
                                     for (_, _, b), n in zip(layers, nnz))
    return total


def decode(data, layers):
    """bytes + [(name, weight shape, bias count)] -> {name: (weights, biases)}."""
    n_layers = len(layers)
    if len(data) < 4 * n_layers:
        raise CompressedError(f"compressed file too short: expected at least {4 * n_layers} "
                              f"bytes of header, found {len(data)}")
    nnz = np.frombuffer(data, np.uint32, n_layers, 0).astype(np.int64)
    expected = layout([(n, int(np.prod(s)), b) for n, s, b in layers])(nnz)
    if expected != len(data):
        raise CompressedError(f"compressed file has {len(data)} bytes, its layers need "
                              f"{expected}: {'truncated' if len(data) < expected else 'extra bytes'}")
    out, off = {}, 4 * n_layers
    for (name, shape, n_bias), n in zip(layers, nnz):
        size = int(np.prod(shape))
        codebook = np.frombuffer(data, np.float32, CODEBOOK, off)
        off += 4 * CODEBOOK
        bias = np.frombuffer(data, np.float32, n_bias, off).copy()
        off += 4 * n_bias
        index = np.frombuffer(data, np.uint8, n, off)
        off += n
        packed = np.frombuffer(data, np.uint8, (n + 1) // 2, off)
        off += (n + 1) // 2
        gaps = np.empty(2 * len(packed), np.int64)
        gaps[0::2], gaps[1::2] = packed & 0x0F, packed >> 4
        pos = np.cumsum(gaps[:n] + 1) - 1
        if n and pos[-1] >= size:
            raise CompressedError(f"layer {name}: non-zero weight at position {pos[-1]} of a "
                                  f"{size}-weight layer")
        w = np.zeros(size, np.float32)
        w[pos] = codebook[index]
        out[name] = (w.reshape(shape), bias)
    assert off == len(data)
    return out


def net_layers(net):
    return [(k, v[0].data.shape, v[1].data.size) for k, v in net.params.items()]


def decode_to_caffemodel(src, out):
    files.check_replaceable(out, "--out", inputs=[src / COMPRESSED, src / PROTOTXT],
                            ours=caffemodel.is_caffemodel)
    net = caffe.Net(str(src / PROTOTXT), caffe.TEST)
    params = decode((src / COMPRESSED).read_bytes(), net_layers(net))
    for name, (w, b) in params.items():
        net.params[name][0].data[...] = w
        net.params[name][1].data[...] = b
    caffemodel.save_atomic(net, out)
    nnz = sum(int((w != 0).sum()) for w, _ in params.values())
    total = sum(w.size for w, _ in params.values())
    return nnz, total


def classify(weights, images, top=5, labels=None):
    """[(image, [(class index, score)...])] with the classifier's deploy net."""
    c = zoo.CLASSIFIERS["squeezenet"]
    net = caffemodel.load_net(c.dir / c.proto, weights)
    out = []
    for path in images:
        rgb = np.asarray(Image.fromarray(load_photo(path)).resize(c.input_hw[::-1],
                                                                Image.BILINEAR))
        scores = net.forward(data=preprocess(rgb, MEAN_BGR)[None])["pool_final"].ravel()
        best = np.argsort(-scores)[:top]
        out.append((path, [(int(i), float(scores[i])) for i in best]))
    return out

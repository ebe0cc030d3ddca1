"""Net surgery: carry weights between nets, and set up fixed upsampling.

    python surgery.py vgg16      ilsvrc-nets/VGG_ILSVRC_16_layers.caffemodel ->
                                 ilsvrc-nets/vgg16-fcn.caffemodel
    python surgery.py caffenet   ilsvrc-nets/bvlc_reference_caffenet.caffemodel ->
                                 ilsvrc-nets/caffenet-fcn.caffemodel
    python surgery.py squeezenet ilsvrc-nets/squeezenet_v1.0.caffemodel ->
                                 ilsvrc-nets/squeezenet-fcn.caffemodel
      [--proto P] [--weights W] [--out O]

The FCN initialisation keeps the classifier's convolutions, recasts fc6/fc7 as
convolutions holding the same numbers (the paper's "convolutionalization") and
drops fc8; every FCN of that backbone loads it by layer name.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import cli  # (first: quiet Caffe logging before caffe loads)
import numpy as np

import caffe
import builder
import caffemodel
import files
import nets
from errors import FcnError


class SurgeryError(FcnError, ValueError):
    """Weights that cannot be carried over as asked; one line."""


def transplant(new_net, net, suffix="", verbose=True):
    """Copy params from ``net`` into ``new_net`` by layer name (``name + suffix`` in
    ``new_net``): equal shapes are copied, equal element counts are coerced (fully
    connected -> convolution: O x I -> O x I' x H x W), and layers ``new_net`` does not
    have are dropped. Returns {"copied", "coerced", "dropped", "kept"} (kept: the
    new net's layers nothing was copied into)."""
    summary = {"copied": [], "coerced": [], "dropped": [], "kept": []}
    for name, blobs in net.params.items():
        target = name + suffix
        if target not in new_net.params:
            summary["dropped"].append(name)
            continue
        new_blobs = new_net.params[target]
        if len(new_blobs) != len(blobs):
            raise SurgeryError(f"{name} has {len(blobs)} blobs, {target} has {len(new_blobs)}")
        coerced = False
        for i, (src, dst) in enumerate(zip(blobs, new_blobs)):
            if src.data.shape == dst.data.shape:
                dst.data[...] = src.data
            elif src.data.size == dst.data.size:
                dst.data.flat[:] = src.data.flat
                coerced = True
            else:
                raise SurgeryError(
                    f"cannot coerce {name}[{i}] {list(src.data.shape)} ({src.data.size} values) "
                    f"into {target}[{i}] {list(dst.data.shape)} ({dst.data.size} values)")
        summary["coerced" if coerced else "copied"].append(name)
    done = {n + suffix for n in summary["copied"] + summary["coerced"]}
    summary["kept"] = [n for n in new_net.params if n not in done]
    if verbose:
        print(transplant_summary(summary, suffix))
    return summary


def transplant_summary(summary, suffix=""):
    def names(key):
        v = summary[key]
        return f"{len(v)}" + (f" ({', '.join(v)})" if v else "")
    into = f" into *{suffix}" if suffix else ""
    return (f"transplant{into}: copied {names('copied')}; coerced {names('coerced')}; "
            f"dropped {names('dropped')}; left as they were {names('kept')}")


def upsample_filt(size):
    """A size x size bilinear kernel: upsampling by a factor (size + 1) // 2."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return ((1 - np.abs(og[0] - center) / factor) *
            (1 - np.abs(og[1] - center) / factor)).astype(np.float32)


def deconvolution_layers(net):
    return [name for name, layer in zip(net._layer_names, net.layers)
            if layer.type == "Deconvolution"]


def interp(net, layers=None):
    """Fill every Deconvolution layer (chosen by type unless ``layers`` names them)
    with a bilinear kernel, one per channel: channel c upsamples channel c only."""
    layers = deconvolution_layers(net) if layers is None else list(layers)
    for name in layers:
        w = net.params[name][0].data
        c_in, c_out, h, wd = w.shape
        if h != wd:
            raise SurgeryError(f"{name}: bilinear kernels must be square, this one is {h}x{wd}")
        if c_in != c_out:
            raise SurgeryError(f"{name}: bilinear upsampling maps each channel to itself; "
                               f"this layer has {c_in} inputs and {c_out} outputs")
        w[...] = 0
        w[range(c_in), range(c_out)] = upsample_filt(h)
    return layers


def expand_score(new_net, new_layer, net, layer):
    """Start a score layer of k' classes from one of k <= k' classes: the first k
    outputs (weights and bias) take the old layer's values, the rest are untouched."""
    old_w, new_w = net.params[layer][0].data, new_net.params[new_layer][0].data
    k, k_new = old_w.shape[0], new_w.shape[0]
    if k > k_new:
        raise SurgeryError(f"{layer} has {k} classes, more than {new_layer}'s {k_new}")
    if old_w.shape[1:] != new_w.shape[1:]:
        raise SurgeryError(f"{layer} {list(old_w.shape)} and {new_layer} {list(new_w.shape)} "
                           "differ beyond the class axis")
    new_w[:k] = old_w
    if len(net.params[layer]) > 1 and len(new_net.params[new_layer]) > 1:
        new_net.params[new_layer][1].data[:k] = net.params[layer][1].data
    return k


def color_depth_conv1(new_net, net, new_layer="conv1_1_bgrd", layer="conv1_1"):
    """Early colour + depth fusion: the 4-channel conv1 takes the colour filters for
    BGR and their mean over channels for depth (as the release does)."""
    w = net.params[layer][0].data
    new_net.params[new_layer][0].data[:, :3] = w
    new_net.params[new_layer][0].data[:, 3] = w.mean(axis=1)
    new_net.params[new_layer][1].data[...] = net.params[layer][1].data


def temp_prototxt(proto):
    f = tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False)
    f.write(str(proto))
    f.close()
    return f.name


def load_net(proto, weights=None, complete=True):
    """The one way the project makes a net with weights: a caffe.Net (TEST phase) from a
    prototxt path or a NetParameter, the weights checked before Caffe sees them (see
    copy_weights)."""
    if isinstance(proto, (str, Path)):
        net = caffe.Net(str(proto), caffe.TEST)
    else:
        path = temp_prototxt(proto)
        try:
            net = caffe.Net(path, caffe.TEST)
        finally:
            os.unlink(path)
    if weights is not None:
        copy_weights(net, weights, complete)
    return net


def copy_weights(net, weights, complete=True):
    """Load a caffemodel into ``net`` by layer name, after checking that Caffe will
    not abort on it. With ``complete`` (inference, scoring, a classifier), every
    learned layer must come from the file; fixed deconvolutions it lacks are filled
    with bilinear kernels, and a note on stderr says so. Without (initialising a
    training net), the file may hold a part of the net. Returns the layers loaded."""
    shared, fixed_missing = caffemodel.check_fits(weights, net, complete)
    net.copy_from(str(weights))
    if complete and fixed_missing:
        interp(net, fixed_missing)
        print(f"note: {weights} has no {', '.join(fixed_missing)}: filled with bilinear "
              "kernels (fixed upsampling, as in training)", file=sys.stderr)
    return shared


def save_atomic(net, path):
    """net.save to ``path`` through a temporary file in the same folder, after checking
    the disk has room (Caffe aborts the process when the write fails)."""
    size = sum(b.data.nbytes for blobs in net.params.values() for b in blobs) + (1 << 20)
    files.need_space(Path(path).parent, size, f"the weights {path}")
    return files.write_atomic(path, lambda tmp: net.save(str(tmp)))


def make_fcn_init(backbone, proto=None, weights=None, out=None):
    """Classifier -> FCN initialisation file; returns (out path, transplant summary)."""
    c = nets.CLASSIFIERS[backbone]
    proto = Path(proto or c.dir / c.proto)
    weights = Path(weights or c.dir / c.weights)
    out = cli.output_file(out or c.dir / c.fcn_init, "--out")
    files.check_replaceable(out, "--out", inputs=[proto, weights], ours=caffemodel.is_caffemodel)
    if not proto.is_file():
        raise SurgeryError(f"classifier net not found: {proto} (python nets.py ilsvrc-nets makes it)")
    if not weights.is_file():
        raise SurgeryError(f"classifier weights not found: {weights}; {c.how_to_get()} "
                           "(see ilsvrc-nets/README.md)")
    classifier = load_net(proto, weights)
    fcn = load_net(builder.fcn_backbone(backbone))
    summary = transplant(fcn, classifier)
    del classifier
    save_atomic(fcn, out)
    return out, summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="surgery.py", description=__doc__.split("\n")[0])
    p.add_argument("backbone", choices=sorted(nets.CLASSIFIERS))
    p.add_argument("--proto", help="classifier deploy prototxt (default: ilsvrc-nets/)")
    p.add_argument("--weights", help="classifier caffemodel (default: ilsvrc-nets/)")
    p.add_argument("--out", help="FCN initialisation to write (default: ilsvrc-nets/)")
    args = p.parse_args(argv)
    out, _ = make_fcn_init(args.backbone, args.proto, args.weights, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))

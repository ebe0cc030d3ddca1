"""Net surgery, as in the release's surgery.py: carry weights between nets by layer
name (transplant, with fully connected layers recast as convolutions: the paper's
"convolutionalization"), start a score layer of more classes from one of fewer,
the early-fusion conv1 of colour and depth, and fixed bilinear upsampling for every
Deconvolution layer. Numpy on the blobs of caffe.Net objects."""
import numpy as np

from fcn.errors import FcnError


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


def deconvolutions(net):
    """The Deconvolution layers of a net, in order: the fixed bilinear upsampling of
    every FCN (training never changes them; interp fills them)."""
    return [name for name, layer in zip(net._layer_names, net.layers)
            if layer.type == "Deconvolution"]


def interp(net, layers=None):
    """Fill every Deconvolution layer (chosen by type unless ``layers`` names them)
    with a bilinear kernel, one per channel: channel c upsamples channel c only."""
    layers = deconvolutions(net) if layers is None else list(layers)
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

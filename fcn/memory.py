"""What a forward pass of a net needs in memory at a given input size, on the CPU or
a GPU, as the patched Caffe allocates it, and the refusal of an input that would
not fit (one line, with the size and the largest size that fits) before Caffe
aborts on it. infer.py checks every image with it; reference.py too."""
import numpy as np

from fcn import cli
from fcn.device import build_info, gpu_free_bytes
from fcn.errors import UserError

INT_MAX = 2 ** 31 - 1            # Caffe CHECKs every blob's element count against it
# Our patch 0009: convolutions unfold their input a band of output rows at a time,
# at most this many values (BaseConvolutionLayer::kColBandElements), or (patch 0019)
# as many as the layer has weights where that is more (fc6: one band).
COL_BAND_ELEMENTS = 2 << 20
# Patch 0010: 3x3 stride-1 convolutions of 16+ input channels run Winograd's forward
# in a second shared buffer: the transformed filters (products x out x in) and a band
# of tile rows of transformed input and products (BaseConvolutionLayer::kWinograd*);
# patch 0021 makes it F(4x4, 3x3): tiles of 4x4 outputs, 36 products (kWinogradTile,
# kWinogradProducts); patch 0024 leaves layers of fewer than 64 tiles of output to
# im2col (kWinogradMinTiles).
WINOGRAD_BAND_ELEMENTS = 4 << 20
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 64
WINOGRAD_TILE = 4
WINOGRAD_PRODUCTS = 36


def conv_geometry(layer):
    """(kernel, stride, pad, dilation, group) of a (de)convolution layer, square."""
    c = layer.convolution_param
    return (c.kernel_size[0] if c.kernel_size else c.kernel_h, c.stride[0] if c.stride else 1,
            c.pad[0] if c.pad else 0, c.dilation[0] if c.dilation else 1, c.group)


def layer_buffers(proto, blobs, banded=True):
    """Elements of Caffe's im2col buffer per layer: convolutions that are not
    1x1/stride 1/pad 0 unfold their input, deconvolutions fold into their output,
    on the CPU a band of rows at a time (at least one row, at most the whole map;
    COL_BAND_ELEMENTS or the layer's weight count, the larger), on the GPU
    (``banded`` False: patch 0017) the whole map at once."""
    out = {}
    for layer in proto.layer:
        if layer.type not in ("Convolution", "Deconvolution"):
            continue
        k, stride, pad, _, group = conv_geometry(layer)
        if layer.type == "Convolution" and (k, stride, pad) == (1, 1, 0):
            continue
        bottom, top = blobs[layer.bottom[0]], blobs[layer.top[0]]
        if layer.type == "Convolution":
            kernel_dim, rows, cols = bottom[1] * k * k, top[2], top[3]
        else:
            kernel_dim, rows, cols = top[1] * k * k, bottom[2], bottom[3]
        weights = bottom[1] * top[1] // group * k * k
        limit = max(COL_BAND_ELEMENTS, weights)
        band = max(1, min(rows, limit // max(1, kernel_dim * cols))) if banded else rows
        out[layer.name] = kernel_dim * cols * band
    return out


def winograd_buffers(proto, blobs):
    """Elements of patch 0010's Winograd buffer per layer that uses it."""
    out = {}
    for layer in proto.layer:
        if layer.type != "Convolution":
            continue
        k, stride, _, dilation, group = conv_geometry(layer)
        bottom, top = blobs[layer.bottom[0]], blobs[layer.top[0]]
        tiles_h, tiles_w = (-(-n // WINOGRAD_TILE) for n in top[2:])
        if ((k, stride, dilation, group) != (3, 1, 1, 1) or bottom[1] < WINOGRAD_MIN_CHANNELS
                or tiles_h * tiles_w < WINOGRAD_MIN_TILES):
            continue
        row = WINOGRAD_PRODUCTS * (bottom[1] + top[1]) * tiles_w
        band = max(1, min(tiles_h, WINOGRAD_BAND_ELEMENTS // row))
        out[layer.name] = WINOGRAD_PRODUCTS * top[1] * bottom[1] + row * band
    return out


def blob_shapes(net, inputs, h, w):
    """{blob: shape} of ``net`` reshaped for an input of h x w (one image)."""
    for b in inputs:
        net.blobs[b].reshape(1, net.blobs[b].shape[1], h, w)
    net.reshape()            # Caffe allocates lazily: reshaping (without touching .data) is free
    return {k: tuple(v.shape) for k, v in net.blobs.items()}


def forward_elements(net, proto, inputs, h, w, gpu=False):
    """(elements of every blob plus the im2col and Winograd buffers, the largest
    single one) at input size h x w. All convolutions share one buffer of each kind
    (our patches 0008, 0010), as large as the largest layer's need; on the GPU the
    column buffer holds whole maps and there is no Winograd buffer."""
    shapes = blob_shapes(net, inputs, h, w)
    blobs = [int(np.prod(s, dtype=np.int64)) for s in shapes.values()]
    buffer = max(layer_buffers(proto, shapes, banded=not gpu).values(), default=0)
    winograd = 0 if gpu else max(winograd_buffers(proto, shapes).values(), default=0)
    return sum(blobs) + buffer + winograd, max(blobs + [buffer, winograd])


# cuDNN's convolution layer keeps a workspace of its own of up to 3 x 8 MB (Caffe's
# limit per algorithm, times its streams per group).
CUDNN_WORKSPACE_ELEMENTS = 3 * (8 << 20) // 4


def memory_model(net, proto, inputs, pad=100, gpu=False):
    """Fit elements(h, w) = a (h + 2 pad)(w + 2 pad) + b from two small sizes (every
    blob and the buffer of an FCN grow with the padded input area). On the GPU the
    weights count too (they reach it with the first forward pass), and a cuDNN
    build's workspaces."""
    pts = []
    for s in (64, 192):
        total, biggest = forward_elements(net, proto, inputs, s, s, gpu)
        pts.append(((s + 2 * pad) ** 2, total, biggest))
    (x0, t0, m0), (x1, t1, m1) = pts
    if gpu:
        extra = sum(b.data.size for v in net.params.values() for b in v)
        if build_info().get("cudnn"):
            extra += CUDNN_WORKSPACE_ELEMENTS * sum(l.type == "Convolution" for l in proto.layer)
        t0, t1 = t0 + extra, t1 + extra
    a, am = (t1 - t0) / (x1 - x0), (m1 - m0) / (x1 - x0)
    return lambda h, w: (a * ((h + 2 * pad) * (w + 2 * pad) - x0) + t0,
                         am * ((h + 2 * pad) * (w + 2 * pad) - x0) + m0)


def available_bytes(device=None):
    """$FCN_MAX_MEMORY_GB when set (checked: a number above 0), else the memory the
    kernel says is available; on a GPU the smaller of that limit and the GPU's free
    memory (from the CUDA runtime)."""
    limit = cli.env_number("FCN_MAX_MEMORY_GB")
    if device is not None and device.is_gpu:
        free = gpu_free_bytes(device)
        return min(x for x in (free, None if limit is None else limit * 1e9,
                               float("inf")) if x is not None)
    if limit is not None:
        return limit * 1e9
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def check_fits_memory(estimate, h, w, path, model_name, device=None):
    """Refuse (one line, with the size and the limit) an input whose forward pass
    would exceed the memory available (the GPU's, on a GPU) or Caffe's per-blob
    element limit."""
    total, biggest = estimate(h, w)
    need, have = total * 4, available_bytes(device)
    where = "GPU memory" if device is not None and device.is_gpu else "memory"
    if biggest <= INT_MAX and need <= have:
        return need
    fits = lambda t, b: b <= INT_MAX and t * 4 <= have  # noqa: E731
    if not fits(*estimate(1, 1)):
        raise UserError(f"{model_name} needs about {estimate(1, 1)[0] * 4 / 1e9:.2f} GB "
                            f"for the smallest image, more than the {have / 1e9:.2f} GB of "
                            f"{where} available (FCN_MAX_MEMORY_GB sets the limit)")
    side = max_side(estimate, fits, h, w)
    if biggest > INT_MAX:
        why = (f"a {biggest / 1e9:.1f}G-element buffer, beyond Caffe's limit of {INT_MAX} "
               "elements per blob")
    else:
        why = (f"about {need / 1e9:.1f} GB, more than the {have / 1e9:.1f} GB of {where} "
               "available (FCN_MAX_MEMORY_GB sets the limit)")
    raise UserError(f"{path} is {w}x{h}: {model_name} would need {why}; resize it to at "
                        f"most about {side} px on the long side")


def max_side(estimate, ok, h, w):
    """The longest side, keeping the aspect ratio, for which ok(total, biggest) holds."""
    lo, hi, long_side = 1, max(h, w), max(h, w)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        s = mid / long_side
        if ok(*estimate(max(1, round(h * s)), max(1, round(w * s)))):
            lo = mid
        else:
            hi = mid - 1
    return lo

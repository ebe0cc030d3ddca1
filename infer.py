"""Segment images with a model of the zoo.

    python infer.py IMAGE_OR_DIR... [--model voc-fcn8s] [--weights W] [--out DIR] [--gpu N | --cpu]

For each image writes <stem>.png (a palette PNG of class indices, VOC colours)
and <stem>_overlay.jpg (the image with the classes blended in), and prints the
time taken and the classes found with their share of pixels. Any size and mode:
greyscale, RGBA, 16-bit and palette images are converted to RGB, and the EXIF
orientation is applied. The net is built once and reshaped only when the image
size changes. Images too large for this machine's memory (or for Caffe's
per-blob limit) are refused with their size and the limit.
"""
import argparse
import sys
import time
from pathlib import Path

import cli
import files
import layers
import numpy as np
import visual
from errors import FcnError
from layers import open_image

REPO = Path(__file__).resolve().parent
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
              ".pgm", ".pbm"}
INT_MAX = 2 ** 31 - 1            # Caffe CHECKs every blob's element count against it


# ---------------------------------------------------------------------------
# Images


def expand_inputs(paths):
    """Files as given; folders -> their image files (sorted, not recursive)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise cli.UserError(f"{p} is a folder with no images "
                                    f"({', '.join(sorted(IMAGE_EXTS))})")
            out += found
        else:
            out.append(p)
    return out


# ---------------------------------------------------------------------------
# Memory: what a forward pass of a net needs at a given input size


# Our patch 0009: convolutions unfold their input a band of output rows at a time,
# at most this many values (BaseConvolutionLayer::kColBandElements).
COL_BAND_ELEMENTS = 2 << 20
# Patch 0010: 3x3 stride-1 convolutions of 16+ input channels run Winograd's F(2x2, 3x3)
# forward in a second shared buffer: the transformed filters (16 x out x in) and a band
# of tile rows of transformed input and products (BaseConvolutionLayer::kWinograd*).
WINOGRAD_BAND_ELEMENTS = 4 << 20
WINOGRAD_MIN_CHANNELS = 16


def conv_geometry(layer):
    """(kernel, stride, pad, dilation, group) of a (de)convolution layer, square."""
    c = layer.convolution_param
    return (c.kernel_size[0] if c.kernel_size else c.kernel_h, c.stride[0] if c.stride else 1,
            c.pad[0] if c.pad else 0, c.dilation[0] if c.dilation else 1, c.group)


def layer_buffers(proto, blobs, banded=True):
    """Elements of Caffe's im2col buffer per layer: convolutions that are not
    1x1/stride 1/pad 0 unfold their input, deconvolutions fold into their output,
    on the CPU a band of rows at a time (at least one row, at most the whole map),
    on the GPU (``banded`` False: patch 0017) the whole map at once."""
    out = {}
    for layer in proto.layer:
        if layer.type not in ("Convolution", "Deconvolution"):
            continue
        k, stride, pad, _, _ = conv_geometry(layer)
        if layer.type == "Convolution" and (k, stride, pad) == (1, 1, 0):
            continue
        bottom, top = blobs[layer.bottom[0]], blobs[layer.top[0]]
        if layer.type == "Convolution":
            kernel_dim, rows, cols = bottom[1] * k * k, top[2], top[3]
        else:
            kernel_dim, rows, cols = top[1] * k * k, bottom[2], bottom[3]
        band = max(1, min(rows, COL_BAND_ELEMENTS // max(1, kernel_dim * cols))) \
            if banded else rows
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
        if (k, stride, dilation, group) != (3, 1, 1, 1) or bottom[1] < WINOGRAD_MIN_CHANNELS:
            continue
        tiles_h, tiles_w = (top[2] + 1) // 2, (top[3] + 1) // 2
        row = 16 * (bottom[1] + top[1]) * tiles_w
        band = max(1, min(tiles_h, WINOGRAD_BAND_ELEMENTS // row))
        out[layer.name] = 16 * top[1] * bottom[1] + row * band
    return out


def forward_elements(net, proto, inputs, h, w, gpu=False):
    """(elements of every blob plus the im2col and Winograd buffers, the largest
    single one) at input size h x w. All convolutions share one buffer of each kind
    (our patches 0008, 0010), as large as the largest layer's need; on the GPU the
    column buffer holds whole maps and there is no Winograd buffer."""
    for b in inputs:
        net.blobs[b].reshape(1, net.blobs[b].shape[1], h, w)
    net.reshape()            # Caffe allocates lazily: reshaping (without touching .data) is free
    shapes = {k: tuple(v.shape) for k, v in net.blobs.items()}
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
        if cli.build_info().get("cudnn"):
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
        free = cli.gpu_free_bytes(device)
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
        raise cli.UserError(f"{model_name} needs about {estimate(1, 1)[0] * 4 / 1e9:.2f} GB "
                            f"for the smallest image, more than the {have / 1e9:.2f} GB of "
                            f"{where} available (FCN_MAX_MEMORY_GB sets the limit)")
    side = max_side(estimate, fits, h, w)
    if biggest > INT_MAX:
        why = (f"a {biggest / 1e9:.1f}G-element buffer, beyond Caffe's limit of {INT_MAX} "
               "elements per blob")
    else:
        why = (f"about {need / 1e9:.1f} GB, more than the {have / 1e9:.1f} GB of {where} "
               "available (FCN_MAX_MEMORY_GB sets the limit)")
    raise cli.UserError(f"{path} is {w}x{h}: {model_name} would need {why}; resize it to at "
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


# ---------------------------------------------------------------------------
# The segmenter


class Segmenter:
    """A deploy net with weights, reshaped only when the input size changes."""

    def __init__(self, model, weights, device=None):
        import caffemodel
        import surgery
        from google.protobuf import text_format
        from caffe.proto import caffe_pb2
        from datasets import DATASETS
        import builder
        self.model = model
        self.inputs = [name for name, _ in builder.MODALITIES[model.modality]]
        if model.modality != "color":
            raise cli.UserError(f"{model.name} reads {model.modality} input, not an image; "
                                "infer.py segments RGB images with the other models")
        caffemodel.read_shapes(weights)
        path = model.dir / "deploy.prototxt"
        self.proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
        self.net = surgery.load_net(path, weights)
        self.device = device
        self.estimate = memory_model(self.net, self.proto, self.inputs,
                                     gpu=device is not None and device.is_gpu)
        self.shape = None
        self.reshapes = 0
        self.mean = DATASETS[model.eval.dataset].mean

    def check(self, h, w, path):
        return check_fits_memory(self.estimate, h, w, path, self.model.name, self.device)

    def load(self, path):
        """HxWx3 RGB of the image at ``path``, refused from its header alone (before
        any pixel is decoded) when its forward pass would not fit in memory."""
        im = open_image(path)
        w, h = im.size
        if layers.orientation(im) in (5, 6, 7, 8):      # EXIF says: rotated by 90 degrees
            w, h = h, w
        self.check(h, w, path)
        return layers.photo_rgb(im, path)

    def __call__(self, rgb):
        """HxWx3 RGB -> {score blob: HxW class indices}."""
        import layers
        x = layers.preprocess(rgb, self.mean)
        if self.shape != x.shape:
            self.net.blobs["data"].reshape(1, *x.shape)
            self.net.reshape()
            self.shape = x.shape
            self.reshapes += 1
        self.net.blobs["data"].data[0] = x
        self.net.forward()
        return {f"score{h.suffix}": self.net.blobs[f"score{h.suffix}"].data[0].argmax(axis=0)
                .astype(np.uint8) for h in self.model.heads}


def default_weights(model):
    """The model's weights by the zoo's rule (nets.Model.trained_weights), or one line
    saying how to get them."""
    found = model.weights()
    if found:
        return found
    released = model.released_weights
    if released:
        raise cli.UserError(f"no weights for {model.name}: get the released ones with 'python "
                            f"prepare.py get weights {model.name}' (or pass --weights)")
    raise cli.UserError(f"no weights for {model.name}: none are released; train it "
                        f"(python {model.name}/solve.py) or pass --weights")


def output_names(model, path):
    """The files infer.py writes for one input: a label PNG per head, then the overlay."""
    stem = Path(path).stem
    return [f"{stem}{h.suffix if h is not model.heads[0] else ''}.png" for h in model.heads] \
        + [f"{stem}_overlay.jpg"]


def check_outputs(model, images, out, weights):
    """Before any work: no two inputs may write the same file, and no output may be
    one of the inputs or a file infer.py did not write (files.check_replaceable)."""
    claimed = {}
    for path in images:
        for name in output_names(model, path):
            target = (out / name).resolve()
            if target in claimed and claimed[target] != path:
                raise cli.UserError(f"{claimed[target]} and {path} would both be written to "
                                    f"{out / name}; segment them into different --out folders")
            files.check_replaceable(out / name, "--out", inputs=[*images, weights],
                                    ours=visual.written_by_us)
            claimed[target] = path


def main(argv=None):
    p = argparse.ArgumentParser(prog="infer.py", description="Segment images.")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", default="voc-fcn8s", help="a model directory (default voc-fcn8s)")
    p.add_argument("--weights", help="caffemodel (default: the model's released weights)")
    p.add_argument("--out", help="output folder (default: out/infer/<model>)")
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    available_bytes()                    # $FCN_MAX_MEMORY_GB checked before any work
    device = cli.use_device(args.gpu, args.cpu)

    import nets
    model = nets.model_from_arg(args.model)
    weights = Path(args.weights) if args.weights else default_weights(model)
    images = expand_inputs(args.images)
    out = cli.output_dir(args.out or REPO / "out" / "infer" / model.name, "--out")
    with files.locked(out, "--out"):
        check_outputs(model, images, out, weights)
        return segment(model, weights, images, out, device)


def segment(model, weights, images, out, device):
    """Every image, once the arguments and outputs are checked and --out is held."""
    from datasets import head_classes
    print(device, flush=True)
    seg = Segmenter(model, weights, device)
    classes = {h.suffix: head_classes(model.eval.dataset, h.label) for h in model.heads}
    first_classes = classes[model.heads[0].suffix]
    bg = first_classes.index("background") if "background" in first_classes else None
    failed = 0
    for path in images:
        t = time.time()
        try:
            rgb = seg.load(path)
        except FcnError as e:
            print(f"infer.py: {e}", file=sys.stderr)
            failed += 1
            continue
        labels = seg(rgb)
        names = output_names(model, path)
        for hd, name in zip(model.heads, names):
            visual.save_label_png(out / name, labels["score" + hd.suffix])
        first = labels["score" + model.heads[0].suffix]
        visual.save_jpeg(out / names[-1], visual.overlay(rgb, first, bg, first_classes))
        found = "; ".join(f"{visual.describe(labels['score' + hd.suffix], classes[hd.suffix])}"
                          for hd in model.heads)
        print(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, {time.time() - t:.2f} s: {found}",
              flush=True)
    print(f"wrote {len(images) - failed} segmentations to {out}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))

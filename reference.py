"""Reference outputs for ports of these models to other frameworks.

    python reference.py export MODEL_DIR --weights W --image IMG --out ref.npz
    python reference.py compare A.npz B.npz [--rtol R] [--atol A]
    python reference.py onnx MODEL_DIR [--weights W] [--size HxW] --out model.onnx
    python reference.py kit MODEL_DIR [--weights W] [--size HxW] --out DIR [--image IMG ...]

``export`` runs the model's deploy net on one image and saves, in one .npz:
``input/<blob>`` (the preprocessed input exactly as the net saw it),
``blob/<name>`` (every blob after the forward pass), ``param/<layer>/<i>``
(every parameter) and ``meta`` (a JSON string: model, weights and image sha256,
the Caffe build, library versions, and the layer list with bottoms and tops).
Caffe runs ReLU and Dropout in place, so a blob such as ``blob/conv1_1`` holds
the value *after* its ReLU (meta's layer list shows which layers wrote into it).

``compare`` prints, for every array of A, the largest absolute and relative
difference from B, and exits 1 if any array is missing, of another shape, or
outside |a - b| <= atol + rtol * |b|; a file that is not a reference .npz
(or a negative tolerance) exits 2.

``onnx`` writes the deploy net with its weights as ONNX (fcn/onnx_export.py), checked
by onnx.checker with full shape inference, for any input size, or with ``--size HxW``
for that size only (what OpenCV 4.x and other static-shape consumers read). Its
metadata holds each input's preprocessing (the dataset reader's recipe). ``kit``
fills a folder with what a port author needs: the ONNX file, the input images (with
``--size``, each image's centre HxW), a reference archive per image (its blobs; the
weights are in the ONNX file), the classes and palette, and check.py, which compares
a port's blobs with the reference and names the first layer that diverges
(docs/ports.md). Every input is read and the space for the whole kit checked before
anything is written; the kit is built beside the folder and put in its place whole,
one kit at a time, replacing an old kit whole (files.new_folder). ``onnx`` replaces
only an ONNX file it wrote (onnx_export.written_by_us), ``export`` only a reference
archive (is_reference).
"""
import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import caffe
import google.protobuf
import numpy as np
import PIL
from PIL import Image
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from fcn import caffemodel, checker, cli, files, images, memory, onnx_export, visual, zoo
from fcn.datasets import head_classes
from fcn.device import use_device
from fcn.paths import CAFFE_DIR, REPO, SHARED_DATA, sdist_env
from fcn.segmenter import Segmenter, default_weights
from fcn.errors import UserError

# The kit's images when none is given: the VOC demo image and a photo of the shared data.
KIT_IMAGES = ("voc-demo/image.jpg", "photos/cat.bmp")


def caffe_build(device):
    """What identifies the Caffe (and the device) that produced the numbers."""
    env = sdist_env()
    stamp = REPO / ".venv/.fcn-caffe-key"
    return {"version": caffe.__version__,
            "sdist": f"{env.get('SDIST_NAME')}=={env.get('SDIST_VERSION')}",
            "sdist_sha256": env.get("SDIST_SHA256"),
            "patches": sorted(p.name for p in (CAFFE_DIR / "patches").glob("*.patch")),
            "build_key": stamp.read_text().strip() if stamp.is_file() else None,
            "mode": device.kind, "device": device.record()}


def conv_forward(device):
    """How this export's convolutions were computed."""
    if device.is_gpu:
        return "cuDNN" if device.record()["caffe_cudnn"] else "im2col + cuBLAS GEMM (GPU)"
    return ("im2col + GEMM" if os.environ["CAFFE_WINOGRAD"] == "0"
            else "Winograd F(4x4, 3x3) where it applies (patches 0010, 0021, 0024)")


def versions():
    return {"python": platform.python_version(), "numpy": np.__version__,
            "protobuf": google.protobuf.__version__, "pillow": PIL.__version__}


def reference_arrays(seg, image, device, params=True, shown=None):
    """Every array of a reference archive for one image through the Segmenter
    ``seg``: the preprocessed input, every blob, (with ``params``) every parameter,
    and ``meta`` (which names the image as ``shown``, by default its path)."""
    model, net = seg.model, seg.net
    rgb = seg.load(image)
    seg(rgb)
    arrays = {f"input/{b}": net.blobs[b].data.copy() for b in seg.inputs}
    arrays.update({f"blob/{k}": v.data.copy() for k, v in net.blobs.items()})
    if params:
        for layer, blobs in net.params.items():
            for i, p in enumerate(blobs):
                arrays[f"param/{layer}/{i}"] = p.data.copy()
    meta = {
        "model": model.name, "net": f"{model.name}/deploy.prototxt",
        "weights": str(seg.weights), "weights_sha256": seg.weights_sha256,
        "image": str(shown or image), "image_sha256": files.checksum(image),
        "image_hw": list(rgb.shape[:2]),
        "preprocessing": model.input_recipes(),
        "conv_forward": conv_forward(device),
        "outputs": outputs(model),
        "layers": [{"name": l.name, "type": l.type, "bottom": list(l.bottom), "top": list(l.top)}
                   for l in seg.proto.layer],
        "caffe": caffe_build(device), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def preprocessing_text(recipes):
    """Each input's recipe in words (zoo.Model.input_recipes)."""
    return "; ".join(f"{i}: {r['steps']}" for i, r in recipes.items())


def outputs(model):
    return [f"score{h.suffix}" for h in model.heads]


def segmenter(model, weights, device):
    # Ports compare against BVLC Caffe's arithmetic, im2col + GEMM, rather than the
    # Winograd forward of patch 0010 (the same convolutions up to float rounding,
    # about 1e-6 relative), unless the caller set CAFFE_WINOGRAD themselves.
    os.environ.setdefault("CAFFE_WINOGRAD", "0")
    seg = Segmenter(model, weights, device)
    seg.weights, seg.weights_sha256 = weights, files.checksum(weights)
    return seg


def save_npz(arrays, out):
    files.need_space(Path(out).parent, sum(a.nbytes for a in arrays.values()) + (1 << 20),
                     f"the reference archive {out}")

    def save(tmp):
        with open(tmp, "wb") as f:           # a file object: savez adds no ".npz" to the name
            np.savez(f, **arrays)
    return files.write_atomic(out, save)


def export(model, weights, image, out, device):
    arrays = reference_arrays(segmenter(model, weights, device), image, device)
    return save_npz(arrays, out), arrays


def classes_of(model):
    """{score output: its class names}."""
    return {f"score{h.suffix}": list(head_classes(model.eval.dataset, h.label))
            for h in model.heads}


def deploy_net(model, weights):
    """(NetParameter, caffe.Net with the weights, their sha256) of a model's deploy net."""
    path = model.dir / "deploy.prototxt"
    proto = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    return proto, caffemodel.load_net(path, weights), files.checksum(weights)


def onnx_model(model, proto, net, weights, weights_sha256, size=None):
    """The ONNX model (bytes) of a deploy net with its weights, checked; for inputs of
    any size, or of ``size`` (H, W) only. Its metadata says how to make each input
    (zoo.Model.input_recipes)."""
    recipes = model.input_recipes()
    meta = {"model": model.name, "dataset": model.eval.dataset,
            "weights": Path(weights).name, "weights_sha256": weights_sha256,
            "classes": classes_of(model), "preprocessing": recipes,
            "input_size": f"{size[0]}x{size[1]}" if size else "any",
            "made_by": onnx_export.MADE_BY}
    doc = (f"{model.name}: the FCN deploy net with the weights {Path(weights).name}, "
           f"for inputs of {size_text(size)}. Inputs: {preprocessing_text(recipes)}. "
           "Outputs: class scores per pixel (argmax over axis 1).")
    return onnx_export.export(proto, net, outputs(model), meta, doc, size=size)


def size_text(size):
    return "any size" if size is None else f"{size[0]}x{size[1]} only"


def input_dims(proto, size):
    """{Input blob: its dims in the export, as text}."""
    hw = "H, W" if size is None else f"{size[0]}, {size[1]}"
    out = {}
    for layer in proto.layer:
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            for i, top in enumerate(layer.top):
                c = shapes[min(i, len(shapes) - 1)].dim[1]
                out[top] = f"({'N' if size is None else 1}, {c}, {hw})"
    return out


def save_onnx(data, out):
    files.need_space(Path(out).parent, len(data) + (1 << 20), f"the ONNX file {out}")
    return files.write_atomic(out, lambda tmp: Path(tmp).write_bytes(data))


def kit_images(given):
    """The kit's input images: those given, else the shared data's (KIT_IMAGES)."""
    if given:
        paths = [Path(p) for p in given]
    else:
        paths = [SHARED_DATA / p for p in KIT_IMAGES]
        if not all(p.is_file() for p in paths):
            raise UserError(f"no --image given and the shared data's images are not in "
                                f"{SHARED_DATA}; give one or more --image")
    for p in paths:
        if not p.is_file():
            raise UserError(f"image not found: {p}")
    stems = [p.stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UserError(f"two images named {twice[0]}.*: their references would have "
                            "the same name; rename one")
    return paths


def read_kit_images(seg, paths, size=None):
    """Every image of the kit read, each pixel decoded, before anything is written:
    one line for one that is not an image, is damaged, would not fit in memory, or
    (with a ``size`` (H, W)) is smaller than that (its centre is what the kit takes).
    Returns the (H, W) the net will see for each."""
    if size:
        seg.check(*size, f"--size {size[0]}x{size[1]}")
    seen = []
    for p in paths:
        if not size:
            seen.append(seg.load(p).shape[:2])
            continue
        h, w = images.load_photo(p).shape[:2]        # as inference reads it: EXIF applied
        if h < size[0] or w < size[1]:
            raise UserError(f"image {p} is {h}x{w}, smaller than --size "
                                f"{size[0]}x{size[1]}; give a smaller --size or larger images")
        seen.append(size)
    return seen


def kit_bytes(seg, onnx_bytes, paths, seen, size):
    """The disk space the whole kit takes, so that it is checked once, before anything
    is written: the ONNX file; each image (its copy; with ``size`` a PNG of its centre,
    at most its pixels and a filter byte a row); each reference archive (the input and
    every blob, float32); a MB for each file's headers and the small files."""
    total = len(onnx_bytes) + (2 << 20)
    for p, (h, w) in zip(paths, seen):
        total += h * (3 * w + 1) + (1 << 16) if size else p.stat().st_size
        shapes = memory.blob_shapes(seg.net, seg.inputs, h, w)
        values = sum(int(np.prod(shapes[b], dtype=np.int64)) for b in [*shapes, *seg.inputs])
        total += 4 * values + (1 << 20)
    seg.shape = None                  # the net's shape is no longer the one it last ran at
    return total


def centre(rgb, size):
    """The centre (H, W) = ``size`` of an image."""
    top, left = (rgb.shape[0] - size[0]) // 2, (rgb.shape[1] - size[1]) // 2
    return rgb[top:top + size[0], left:left + size[1]]


KIT_README = """\
# Port kit: {model}

Made by `python reference.py kit` of the FCN reference reproduction (docs/ports.md).

- `{model}.onnx`: the deploy net with its weights (opset {opset}), for inputs of
  {size}; input{s} {inputs}, output{so} {outputs}; every intermediate value is named
  after the Caffe blob that holds it.
- `images/`: the input images{crop}; `reference/<image>.npz`: Caffe's blobs for each
  (`input/<name>` the preprocessed input, `blob/<name>` every blob, `meta` the layer
  list).
- Preprocessing (also in the ONNX file's metadata and in classes.json):
{preprocessing}
- `classes.json`: the class names of each output, the palette, the preprocessing.
- `check.py` (numpy only): `python check.py reference/<image>.npz port.npz`, where
  port.npz holds your framework's values for any of the blobs (`np.savez("port.npz",
  score=..., pool5=...)`), prints each blob's error and the first layer that diverges.
"""


def kit(model, seg, paths, out, device, size=None, final=None):
    """Fill ``out`` with the port kit but its ONNX file (see KIT_README); returns the
    files written. With a ``size`` (H, W): each image's centre H x W as a PNG (the
    pixels its reference is computed from). ``final``: where ``out`` will be (the
    references name their images there)."""
    written = []
    (out / "images").mkdir(exist_ok=True)
    (out / "reference").mkdir(exist_ok=True)
    for image in paths:
        if size:
            crop = centre(images.load_photo(image), size)
            copy = out / "images" / f"{image.stem}.png"
            written.append(files.write_atomic(copy, lambda tmp: Image.fromarray(crop)
                                              .save(tmp, format="PNG")))
        else:
            copy = out / "images" / image.name
            written.append(files.write_atomic(copy, lambda tmp: shutil.copyfile(image, tmp)))
        shown = (final or out) / "images" / copy.name if size else image
        arrays = reference_arrays(seg, copy if size else image, device, params=False,
                                  shown=shown)
        written.append(save_npz(arrays, out / "reference" / f"{image.stem}.npz"))
    recipes = model.input_recipes()
    info = {"model": model.name, "outputs": classes_of(model),
            "palette": visual.palette().tolist(), "preprocessing": recipes}
    written.append(files.write_atomic(out / "classes.json", lambda tmp: Path(tmp).write_text(
        json.dumps(info, indent=1) + "\n")))
    written.append(files.write_atomic(out / "check.py", lambda tmp: shutil.copyfile(
        checker.__file__, tmp)))
    inputs = seg.inputs
    dims = input_dims(seg.proto, size)
    text = KIT_README.format(
        model=model.name, opset=onnx_export.OPSET, size=size_text(size),
        s="s" if len(inputs) > 1 else "", inputs=", ".join(f"`{i}` {dims[i]}" for i in inputs),
        so="s" if len(outputs(model)) > 1 else "",
        outputs=", ".join(f"`{o}`" for o in outputs(model)),
        crop=f" (each image's centre {size[0]}x{size[1]}, as PNG)" if size else "",
        preprocessing="\n".join(f"  - `{i}`: {r['steps']}" for i, r in recipes.items()))
    written.append(files.write_atomic(out / "README.md", lambda tmp: Path(tmp).write_text(text)))
    return written


def load(path):
    """Every array of a reference .npz; one line (exit 2) if the file is not one: not
    found, empty, a single .npy, not a zip, a member that is not an array, pickled
    objects, or arrays that are not numbers (fcn/checker.py's load)."""
    try:
        return checker.load(Path(path), "a reference .npz (python reference.py export writes one)")
    except checker.CheckError as e:
        raise UserError(str(e)) from None


# What export puts in every reference's meta.
REFERENCE_META = ("model", "weights_sha256", "image_sha256", "layers", "caffe")


def is_reference(path):
    """True for an archive ``export`` wrote (what it may replace): an .npz whose
    members are all meta, input/..., blob/... or param/..., and whose meta holds what
    export records (REFERENCE_META). A port's archive (blobs under their own names),
    even with a copy of a reference's meta, is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not all(k == "meta" or k.split("/")[0] in ("input", "blob", "param")
                       for k in z.files):
                return False
            meta = json.loads(str(z["meta"]))
            return isinstance(meta, dict) and all(k in meta for k in REFERENCE_META)
    except Exception:  # anything that is not such an archive
        return False


def main(argv=None):
    p = argparse.ArgumentParser(prog="reference.py", description="Reference outputs for ports.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="run a model on an image and save everything")
    e.add_argument("model", metavar="MODEL_DIR")
    e.add_argument("--weights", required=True)
    e.add_argument("--image", required=True)
    e.add_argument("--out", required=True)
    cli.add_device_flags(e)
    c = sub.add_parser("compare", help="compare two exports")
    c.add_argument("a", metavar="A.npz")
    c.add_argument("b", metavar="B.npz")
    c.add_argument("--rtol", type=float, default=1e-4)
    c.add_argument("--atol", type=float, default=1e-5)
    o = sub.add_parser("onnx", help="the deploy net with its weights as ONNX")
    o.add_argument("model", metavar="MODEL_DIR")
    o.add_argument("--weights", help="default: the model's weights by the zoo's rule")
    o.add_argument("--size", metavar="HxW", help="for inputs of this size only (static "
                   "dimensions: OpenCV 4.x, TensorRT); default: any size")
    o.add_argument("--out", required=True, metavar="FILE.onnx")
    k = sub.add_parser("kit", help="a folder with what a port author needs")
    k.add_argument("model", metavar="MODEL_DIR")
    k.add_argument("--weights", help="default: the model's weights by the zoo's rule")
    k.add_argument("--size", metavar="HxW", help="the fixed-size export, and each image's "
                   "centre of this size; default: any size, the whole images")
    k.add_argument("--out", required=True, metavar="DIR")
    k.add_argument("--image", action="append",
                   help="an input image (repeatable; default: two of the shared data)")
    cli.add_device_flags(k)
    args = p.parse_args(argv)
    return COMMANDS[args.command](args)


def export_command(args):
    model = zoo.model_from_arg(args.model)
    cli.output_file(args.out, "--out")
    files.check_replaceable(args.out, "--out", inputs=[args.weights, args.image],
                            ours=is_reference)
    device = use_device(args.gpu, args.cpu)
    print(device, flush=True)
    out, arrays = export(model, Path(args.weights), Path(args.image), args.out, device)
    n = sum(k.startswith("blob/") for k in arrays)
    print(f"wrote {out}: {n} blobs, {sum(k.startswith('param/') for k in arrays)} params, "
          f"{out.stat().st_size / 1e6:.1f} MB")
    return 0


def compare_command(args):
    cli.finite("--rtol", args.rtol, low=0)
    cli.finite("--atol", args.atol, low=0)
    a, b = load(args.a), load(args.b)
    rows = checker.compare(a, b, args.rtol, args.atol)
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'array':{width}}  {'shape':>20}  {'max abs':>10}  {'max rel':>10}  ok")
    for k, shape, mabs, mrel, ok, note in rows:
        s = "x".join(map(str, shape)) if shape is not None else "-"
        fa = f"{mabs:.3g}" if mabs is not None else "-"
        fr = f"{mrel:.3g}" if mrel is not None else "-"
        print(f"{k:{width}}  {s:>20}  {fa:>10}  {fr:>10}  {'yes' if ok else 'NO'}"
              + (f"  {note}" if note else ""))
    bad = [r for r in rows if not r[4]]
    print(f"{len(rows) - len(bad)}/{len(rows)} arrays within rtol={args.rtol}, atol={args.atol}")
    return 1 if bad else 0


def model_and_weights(args):
    model = zoo.model_from_arg(args.model)
    weights = Path(args.weights) if args.weights else default_weights(model)
    caffemodel.check_file(weights)
    return model, weights


def onnx_command(args):
    model, weights = model_and_weights(args)
    size = cli.image_size("--size", args.size) if args.size else None
    out = cli.output_file(args.out, "--out")
    files.check_replaceable(out, "--out", inputs=[weights], ours=onnx_export.written_by_us)
    use_device(None, True)                  # the weights are read on the CPU
    proto, net, sha = deploy_net(model, weights)
    save_onnx(onnx_model(model, proto, net, weights, sha, size), out)
    inputs = ", ".join(f"{i} {d}" for i, d in input_dims(proto, size).items())
    print(f"wrote {out}: {model.name}, inputs {inputs}, outputs "
          f"{', '.join(outputs(model))}, opset {onnx_export.OPSET}, "
          f"{out.stat().st_size / 1e6:.1f} MB; onnx.checker passed")
    return 0


KIT = "reference.py kit"        # the command a kit folder's marker names


def kit_command(args):
    """Every input and the folder checked, the ONNX file made and the space for the
    whole kit checked, before anything is written; the kit is built in a hidden
    folder beside --out, which takes --out's place when it is whole
    (files.new_folder: one kit at a time, an old kit replaced whole)."""
    model, weights = model_and_weights(args)
    size = cli.image_size("--size", args.size) if args.size else None
    paths = kit_images(args.image)
    files.check_new_folder(args.out, "--out", KIT)
    device = use_device(args.gpu, args.cpu)
    print(device, flush=True)
    seg = segmenter(model, weights, device)
    seen = read_kit_images(seg, paths, size)
    data = onnx_model(model, seg.proto, seg.net, weights, seg.weights_sha256, size)
    files.need_space(Path(args.out).resolve().parent, kit_bytes(seg, data, paths, seen, size),
                     f"the kit {args.out}")
    with files.new_folder(args.out, "--out", KIT) as tmp:
        written = [save_onnx(data, tmp / f"{model.name}.onnx")]
        del data
        written += kit(model, seg, paths, tmp, device, size, final=Path(args.out))
        names = [str(Path(w).relative_to(tmp)) for w in written]
    out = Path(args.out)
    print(f"wrote {out}: {', '.join(names)}")
    print(f"check a port with: python {shlex.quote(str(out / 'check.py'))} "
          f"{shlex.quote(str(out / 'reference' / f'{paths[0].stem}.npz'))} port.npz")
    return 0


COMMANDS = {"export": export_command, "compare": compare_command, "onnx": onnx_command,
            "kit": kit_command}


if __name__ == "__main__":
    sys.exit(cli.run(main))

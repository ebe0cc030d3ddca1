"""Reference outputs for ports of these models to other frameworks.

    python reference.py export MODEL_DIR --weights W --image IMG --out ref.npz
    python reference.py compare A.npz B.npz [--rtol R] [--atol A]

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
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import caffe
import google.protobuf
import numpy as np
import PIL

import infer
from fcn import cli, files, zoo
from fcn.device import use_device
from fcn.paths import CAFFE_DIR, REPO, sdist_env


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
            else "Winograd F(2x2, 3x3) where it applies (patch 0010)")


def versions():
    return {"python": platform.python_version(), "numpy": np.__version__,
            "protobuf": google.protobuf.__version__, "pillow": PIL.__version__}


def export(model, weights, image, out, device):
    # Ports compare against BVLC Caffe's arithmetic, im2col + GEMM, rather than the
    # Winograd forward of patch 0010 (the same convolutions up to float rounding,
    # about 1e-6 relative), unless the caller set CAFFE_WINOGRAD themselves.
    os.environ.setdefault("CAFFE_WINOGRAD", "0")
    seg = infer.Segmenter(model, weights, device)
    rgb = seg.load(image)
    seg(rgb)
    net = seg.net
    arrays = {f"input/{b}": net.blobs[b].data.copy() for b in seg.inputs}
    arrays.update({f"blob/{k}": v.data.copy() for k, v in net.blobs.items()})
    for layer, params in net.params.items():
        for i, p in enumerate(params):
            arrays[f"param/{layer}/{i}"] = p.data.copy()
    meta = {
        "model": model.name, "net": f"{model.name}/deploy.prototxt",
        "weights": str(weights), "weights_sha256": files.checksum(weights),
        "image": str(image), "image_sha256": files.checksum(image),
        "image_hw": list(rgb.shape[:2]),
        "preprocessing": "RGB -> BGR, float32, minus mean (BGR), HxWxC -> CxHxW",
        "mean_bgr": list(seg.mean),
        "conv_forward": conv_forward(device),
        "outputs": [f"score{h.suffix}" for h in model.heads],
        "layers": [{"name": l.name, "type": l.type, "bottom": list(l.bottom), "top": list(l.top)}
                   for l in seg.proto.layer],
        "caffe": caffe_build(device), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    files.need_space(Path(out).parent, sum(a.nbytes for a in arrays.values()) + (1 << 20),
                     f"the reference archive {out}")

    def save(tmp):
        with open(tmp, "wb") as f:           # a file object: savez adds no ".npz" to the name
            np.savez(f, **arrays)
    return files.write_atomic(out, save), arrays


def load(path):
    """Every array of a reference .npz; one line (exit 2) if the file is not one: not
    found, empty, a single .npy, not a zip, a member that is not an array, pickled
    objects, or arrays that are not numbers."""
    path = Path(path)
    if not path.is_file():
        raise cli.UserError(f"not found: {path}")
    what = f"{path} is not a reference .npz (python reference.py export writes one)"
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises many types for files that are not arrays
        raise cli.UserError(f"{what}: {type(e).__name__}: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise cli.UserError(f"{what}: it holds a single array")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise cli.UserError(f"{what}: {type(e).__name__}: {e}") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise cli.UserError(f"{what}: its member {k} is not a .npy array")
        if k != "meta" and v.dtype.kind not in "biuf":
            raise cli.UserError(f"{what}: {k} holds {v.dtype} values, not numbers")
    if not any(k != "meta" for k in arrays):
        raise cli.UserError(f"{what}: it holds no arrays")
    return arrays


def is_reference(path):
    """True for an archive ``export`` wrote (its meta names a model)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "model" in json.loads(str(z["meta"]))
    except Exception:  # anything that is not such an archive
        return False


def compare(a, b, rtol, atol):
    """[(key, shape, max abs, max rel, ok, note)] for every array of a (and b's extras)."""
    rows = []
    for k in sorted(set(a) | set(b)):
        if k == "meta":
            continue
        if k not in b or k not in a:
            rows.append((k, None, None, None, False, f"only in {'A' if k in a else 'B'}"))
            continue
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if x.shape != y.shape:
            rows.append((k, x.shape, None, None, False, f"shape {x.shape} vs {y.shape}"))
            continue
        diff = np.abs(x - y)
        mabs = float(diff.max()) if diff.size else 0.0
        mrel = float((diff / np.maximum(np.abs(y), 1e-12)).max()) if diff.size else 0.0
        ok = bool(np.all(diff <= atol + rtol * np.abs(y)))
        rows.append((k, x.shape, mabs, mrel, ok, ""))
    return rows


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
    args = p.parse_args(argv)

    if args.command == "export":
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

    cli.finite("--rtol", args.rtol, low=0)
    cli.finite("--atol", args.atol, low=0)
    a, b = load(args.a), load(args.b)
    rows = compare(a, b, args.rtol, args.atol)
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


if __name__ == "__main__":
    sys.exit(cli.run(main))

#!/usr/bin/env python3
"""Check a port of an FCN against Caffe's reference blobs, layer by layer.

    python check.py REFERENCE.npz PORT.npz [--tol 1e-4]

REFERENCE.npz is a reference archive of `reference.py export` (the kit's
reference/*.npz): ``blob/<name>`` for every blob of the net after the forward
pass, ``input/<name>`` the preprocessed input, and ``meta`` (JSON) with the layer
list. PORT.npz holds your framework's values for any of those blobs on the same
input, under the blob's name (``conv1_1`` or ``blob/conv1_1``); the kit's ONNX
file names every value after its blob. Caffe runs ReLU in place, so a blob such
as conv1_1 holds the value after its ReLU.

The blobs are compared in the order the net computes them: a blob agrees when
max |port - caffe| <= tol x (the largest |caffe| of that blob). It prints a line
per blob, then the first blob that diverges and the layer that wrote it, since a
difference there spreads to every blob after it. For the score outputs it also
prints the share of pixels whose argmax agrees, and names the reference's blobs
the port lacks and the port's names the reference lacks (not compared). Exit 0 when
every blob compared agrees, 1 when one diverges, 2 when a file cannot be used (a
reference whose meta is not a layer list, a port without the net's outputs).

Only numpy and the standard library: copy this file anywhere. In the project,
fcn/checker.py is this file (reference.py compare uses its loading and
comparison too).
"""
import argparse
import json
import sys

import numpy as np


class CheckError(Exception):
    """A file that cannot be used; one line."""


def load(path, kind="an .npz of arrays"):
    """Every array of a .npz (allow_pickle off), checked to be numbers (``meta``
    aside); CheckError saying the file is not ``kind`` otherwise."""
    what = f"{path} is not {kind}"
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CheckError(f"not found: {path}") from None
    except Exception as e:  # numpy raises many types for files that are not arrays
        raise CheckError(f"{what}: {type(e).__name__}: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CheckError(f"{what}: it holds a single array")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise CheckError(f"{what}: {type(e).__name__}: {e}") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise CheckError(f"{what}: its member {k} is not a .npy array")
        if k != "meta" and v.dtype.kind not in "biuf":
            raise CheckError(f"{what}: {k} holds {v.dtype} values, not numbers")
    if not any(k != "meta" for k in arrays):
        raise CheckError(f"{what}: it holds no arrays")
    return arrays


def compare(a, b, rtol, atol):
    """[(key, shape, max abs, max rel, ok, note)] for every array of a and b (meta
    aside): ok when |a - b| <= atol + rtol |b| everywhere."""
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


def read_meta(ref, path):
    """The reference's meta: a JSON object whose ``layers`` are objects with a name, a
    type and a list of tops, and whose ``outputs`` (if any) are blob names;
    CheckError naming ``path`` otherwise."""
    what = f"{path} has no usable layer list (meta): use an archive of reference.py export"
    if "meta" not in ref:
        raise CheckError(what)
    try:
        meta = json.loads(str(ref["meta"]))
    except ValueError:
        raise CheckError(f"{what} (its meta is not JSON)") from None

    def names(v):
        return isinstance(v, list) and all(isinstance(n, str) for n in v)
    if not isinstance(meta, dict) or not isinstance(meta.get("layers"), list):
        raise CheckError(what)
    for i, layer in enumerate(meta["layers"]):
        if not (isinstance(layer, dict) and isinstance(layer.get("name"), str)
                and isinstance(layer.get("type"), str) and names(layer.get("top"))):
            raise CheckError(f"{what} (layer {i} is not a name, a type and a list of tops)")
    if not names(meta.get("outputs", [])):
        raise CheckError(f"{what} (its outputs are not a list of blob names)")
    return meta


def blob_order(meta):
    """[(blob, the layers that wrote it)] in the order the net first writes them."""
    order, writers = [], {}
    for layer in meta["layers"]:
        for top in layer["top"]:
            if top not in writers:
                order.append(top)
                writers[top] = []
            writers[top].append(f"{layer['name']} ({layer['type']})")
    return [(b, writers[b]) for b in order]


def port_blob(port, blob):
    """The port's value of ``blob`` (named ``blob`` or ``blob/<blob>``), or None."""
    return port.get(blob, port.get(f"blob/{blob}"))


def not_compared(ref, port, meta):
    """(the reference's blobs the port lacks, the port's names the reference lacks)."""
    known = {k[5:] for k in ref if k.startswith("blob/")}
    lacks = [b for b, _ in blob_order(meta) if b in known and port_blob(port, b) is None]
    unknown = [k for k in port if (k[5:] if k.startswith("blob/") else k) not in known]
    return lacks, unknown


def check(ref, port, tol, meta=None):
    """[(blob, writers, shape, error relative to the blob's largest value or None,
    ok, note)] for every blob of the reference that the port has."""
    meta = meta if meta is not None else json.loads(str(ref["meta"]))
    rows = []
    for blob, writers in blob_order(meta):
        want = ref.get(f"blob/{blob}")
        got = port_blob(port, blob)
        if want is None or got is None:
            continue
        if got.shape != want.shape:
            rows.append((blob, writers, want.shape, None, False,
                         f"shape {tuple(got.shape)}, Caffe's {tuple(want.shape)}"))
            continue
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        scale = float(np.abs(want64).max()) if want.size else 0.0
        err = float(np.abs(got64 - want64).max()) / max(scale, 1e-30) if want.size else 0.0
        note = ""
        if blob in meta.get("outputs", ()) and want.ndim == 4:
            agree = float((got64.argmax(1) == want64.argmax(1)).mean())
            note = f"argmax agrees on {100 * agree:.3f}% of pixels"
        rows.append((blob, writers, want.shape, err, bool(err <= tol), note))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n")[1])
    p.add_argument("reference", metavar="REFERENCE.npz")
    p.add_argument("port", metavar="PORT.npz")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="largest |port - caffe| allowed, as a share of the blob's largest "
                        "|value| (default 1e-4)")
    args = p.parse_args(argv)
    try:
        if not args.tol >= 0 or args.tol == float("inf"):
            raise CheckError(f"--tol must be a number >= 0, got {args.tol}")
        ref, port = load(args.reference), load(args.port)
        meta = read_meta(ref, args.reference)
        rows = check(ref, port, args.tol, meta)
        lacks, unknown = not_compared(ref, port, meta)
        if not rows:
            raise CheckError(f"{args.port} holds none of the reference's blobs (names such "
                             f"as {', '.join(b for b, _ in blob_order(meta)[:3])})")
        missing = [o for o in meta.get("outputs", []) if o in lacks]
        if missing:
            raise CheckError(
                f"{args.port} lacks the net's output{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}" + (f" (it holds {', '.join(unknown)}, which the "
                                           "reference has not)" if unknown else "")
                + "; save each value under the name of its blob")
    except CheckError as e:
        print(f"check.py: {e}", file=sys.stderr)
        return 2
    width = max(len(r[0]) for r in rows)
    print(f"{'blob':{width}}  {'shape':>18}  {'error':>9}  ok")
    for blob, _, shape, err, ok, note in rows:
        e = f"{err:.2e}" if err is not None else "-"
        print(f"{blob:{width}}  {'x'.join(map(str, shape)):>18}  {e:>9}  "
              f"{'yes' if ok else 'NO'}" + (f"  {note}" if note else ""))
    if lacks:
        print(f"not compared, not in the port ({len(lacks)} of the reference's "
              f"{len(lacks) + len(rows)}): {', '.join(lacks)}")
    if unknown:
        print(f"not compared, not in the reference ({len(unknown)}): {', '.join(unknown)}")
    bad = [r for r in rows if not r[4]]
    print(f"{len(rows) - len(bad)} of {len(rows)} blobs agree within {args.tol:g} of their "
          "largest value")
    if bad:
        blob, writers, _, err, _, note = bad[0]
        how = f"error {err:.2e}" if err is not None else note
        print(f"first divergence: blob {blob}, written by {', '.join(writers)}: {how}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

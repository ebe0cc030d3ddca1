"""Caffemodels: the one checked load of a net with weights, and their writing.

Caffe aborts the whole process (a failed CHECK) when a caffemodel is missing,
truncated or does not fit the net it is copied into. So every load checks first:
``read_shapes`` walks the protobuf wire format, reading only field headers and
shapes and seeking past the weight arrays (a 540 MB file in milliseconds), once per
file (the result is kept while the file is unchanged, so the early check of a
command and its load later read it once). Both the current format (``layer``,
field 100) and the V1 format of 2014-era models such as VGG-16 (``layers``,
field 2) are read.
"""
import functools
import os
import sys
import tempfile
from pathlib import Path

import caffe
import numpy as np

from fcn import files
from fcn.errors import FcnError
from fcn.surgery import deconvolutions, interp


class WeightsError(FcnError):
    """A caffemodel that is missing, unreadable or does not fit a net; one line."""


# field numbers (caffe.proto)
NET_LAYER, NET_LAYERS_V1 = 100, 2
LAYER_NAME, LAYER_BLOBS = 1, 7
V1_NAME, V1_BLOBS = 4, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH, BLOB_SHAPE = 1, 2, 3, 4, 7
BLOB_DATA, BLOB_DOUBLE_DATA = 5, 8
SHAPE_DIM = 1


class ProtoReader:
    """The protobuf wire format, field by field, seeking past what is not read (the
    weights here; an ONNX model's graph in fcn/onnx_export.py)."""

    def __init__(self, f, size):
        self.f, self.size = f, size

    def varint(self, end):
        shift = result = 0
        while True:
            if self.f.tell() >= end:
                raise EOFError
            b = self.f.read(1)
            if not b:
                raise EOFError
            result |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def fields(self, end):
        """(field number, wire type, value or (start, length)) up to ``end``."""
        while self.f.tell() < end:
            key = self.varint(end)
            field, wire = key >> 3, key & 7
            if wire == 0:
                yield field, wire, self.varint(end)
            elif wire == 1 or wire == 5:
                n = 8 if wire == 1 else 4
                self.skip(n, end)
                yield field, wire, None
            elif wire == 2:
                length = self.varint(end)
                start = self.f.tell()
                if start + length > end:
                    raise EOFError
                yield field, wire, (start, length)
                self.f.seek(start + length)
            else:
                raise ValueError(f"unknown wire type {wire}")

    def skip(self, n, end):
        if self.f.tell() + n > end:
            raise EOFError
        self.f.seek(n, os.SEEK_CUR)

    def string(self, span):
        self.f.seek(span[0])
        return self.f.read(span[1]).decode("utf-8", "replace")

    def packed_varints(self, span):
        self.f.seek(span[0])
        end, out = span[0] + span[1], []
        while self.f.tell() < end:
            out.append(self.varint(end))
        return out


def _blob_shape(r, span):
    """(shape, number of stored values) of one BlobProto."""
    end = span[0] + span[1]
    r.f.seek(span[0])
    legacy, dims, stored = {}, None, 0
    for field, wire, value in list(r.fields(end)):
        if field in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == 0:
            legacy[field] = value
        elif field == BLOB_DATA:
            stored += value[1] // 4 if wire == 2 else 1
        elif field == BLOB_DOUBLE_DATA:
            stored += value[1] // 8 if wire == 2 else 1
        elif field == BLOB_SHAPE and wire == 2:
            here = r.f.tell()
            r.f.seek(value[0])
            dims = []
            for f2, w2, v2 in list(r.fields(value[0] + value[1])):
                if f2 == SHAPE_DIM:
                    dims += r.packed_varints(v2) if w2 == 2 else [v2]
            r.f.seek(here)
    if dims is None:
        # legacy 4-D blobs: num, channels, height, width (0 when unset, as in Caffe)
        dims = [legacy.get(k, 0) for k in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)]
    return tuple(dims), stored


def check_file(path):
    """One line unless ``path`` is a file: missing, or a folder."""
    if Path(path).is_dir():
        raise WeightsError(f"{path} is a folder, not a weights file (.caffemodel); give the "
                           "file")
    if not Path(path).is_file():
        raise WeightsError(f"weights file not found: {path}")


def read_shapes(path):
    """{layer name: [blob shape, ...]} for every layer with blobs, in file order."""
    path = Path(path)
    check_file(path)
    st = path.stat()
    return _read_shapes(path.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_shapes(path, size, mtime_ns):
    out = {}
    try:
        with open(path, "rb") as f:
            r = ProtoReader(f, size)
            for field, wire, value in list(r.fields(size)):
                if wire != 2 or field not in (NET_LAYER, NET_LAYERS_V1):
                    continue
                name_f, blobs_f = (LAYER_NAME, LAYER_BLOBS) if field == NET_LAYER \
                    else (V1_NAME, V1_BLOBS)
                f.seek(value[0])
                name, blob_spans = None, []
                for f2, w2, v2 in list(r.fields(value[0] + value[1])):
                    if f2 == name_f and w2 == 2:
                        name = v2
                    elif f2 == blobs_f and w2 == 2:
                        blob_spans.append(v2)
                if name is not None and blob_spans:
                    layer = r.string(name)
                    blobs = [_blob_shape(r, s) for s in blob_spans]
                    for shape, stored in blobs:
                        if stored != int(np.prod(shape, dtype=np.int64)):
                            raise WeightsError(f"{path}: layer {layer} stores {stored} values "
                                               f"for a blob of shape {list(shape)}; the file "
                                               "is damaged")
                    shapes = [shape for shape, _ in blobs]
                    if layer in out and out[layer] != shapes:
                        # Caffe copies every occurrence, and aborts on the one that
                        # does not fit (two caffemodels joined with cat, say)
                        raise WeightsError(
                            f"{path}: layer {layer} appears twice, with blobs "
                            f"{[list(s) for s in out[layer]]} and {[list(s) for s in shapes]}; "
                            "the file is damaged or two files joined")
                    out[layer] = shapes
    except (EOFError, ValueError):
        raise WeightsError(f"{path} is truncated or not a caffemodel ({size} bytes)") from None
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror}") from None
    if not out:
        raise WeightsError(f"{path} holds no layer weights; is it a caffemodel?")
    return out


def is_caffemodel(path):
    """True for a whole caffemodel (what the commands that write one may replace)."""
    try:
        read_shapes(path)
        return True
    except WeightsError:
        return False


def same_shape(net_shape, file_shape):
    """Caffe's rule: equal shapes, or a legacy 4-D shape equal to the net's shape
    padded with leading 1s."""
    net_shape = tuple(net_shape)
    if net_shape == tuple(file_shape):
        return True
    if len(file_shape) == 4 and len(net_shape) <= 4:
        return (1,) * (4 - len(net_shape)) + net_shape == tuple(file_shape)
    return False


def check_fits(path, net, complete=False):
    """Raise WeightsError unless Caffe's copy_from(path) into ``net`` will succeed:
    every layer both share must have the same number and shapes of blobs (every
    occurrence of a name: see read_shapes), and they must share at least one layer.
    With ``complete``, every learned layer of the net must be in the file too (fixed
    deconvolutions may be missing: the caller fills them). Returns (shared layer
    names, the net's fixed layers missing from the file)."""
    shapes = read_shapes(path)
    shared = [k for k in net.params if k in shapes]
    if not shared:
        raise WeightsError(f"{path} shares no layer with the net (file has "
                           f"{', '.join(list(shapes)[:4])}...; net has "
                           f"{', '.join(list(net.params)[:4])}...)")
    for k in shared:
        mine = [tuple(b.data.shape) for b in net.params[k]]
        theirs = shapes[k]
        if len(mine) != len(theirs) or not all(same_shape(a, b) for a, b in zip(mine, theirs)):
            raise WeightsError(f"{path} does not fit the net: layer {k} has blobs "
                               f"{[list(s) for s in theirs]} in the file and "
                               f"{[list(s) for s in mine]} in the net")
    absent = [k for k in net.params if k not in shapes]
    fixed = set(deconvolutions(net))
    learned = [k for k in absent if k not in fixed]
    if complete and learned:
        raise WeightsError(f"{path} lacks {len(learned)} of the net's {len(net.params)} layers "
                           f"with weights ({', '.join(learned[:5])}"
                           f"{', ...' if len(learned) > 5 else ''}); these weights are for "
                           "another model, or cut short")
    return shared, [k for k in absent if k in fixed]


# ---------------------------------------------------------------------------
# Loading and saving


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


def check_finite(net, layers, weights):
    """Raise WeightsError when a parameter of ``layers`` (those loaded from
    ``weights``) holds NaN or infinity: every output of such a net is garbage, as a
    training run that diverged stops rather than keep such a state (training.py)."""
    for k in layers:
        for i, b in enumerate(net.params[k]):
            a = b.data
            if a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
                n = int(a.size - np.isfinite(a).sum())
                raise WeightsError(f"{weights}: {n} of the {a.size} values of layer {k} (blob "
                                   f"{i}) are not finite (NaN or infinity); these weights are "
                                   "from a run that diverged, or damaged: use other weights")


def copy_weights(net, weights, complete=True):
    """Load a caffemodel into ``net`` by layer name, after checking that Caffe will
    not abort on it, and refuse it if a value it holds is not finite. With
    ``complete`` (inference, scoring, a classifier), every learned layer must come
    from the file; fixed deconvolutions it lacks are filled with bilinear kernels,
    and a note on stderr says so. Without (initialising a training net), the file
    may hold a part of the net. Returns the layers loaded."""
    shared, fixed_missing = check_fits(weights, net, complete)
    net.copy_from(str(weights))
    check_finite(net, shared, weights)
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

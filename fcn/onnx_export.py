"""A zoo model's deploy net with its weights as ONNX (opset 17), for other
frameworks and runtimes: the same inputs (N, C, H, W with N, H and W free), the
same score outputs, and every intermediate value named after the Caffe blob that
holds it (a blob written in place, such as conv1_1 after its ReLU, is the last
value written into it).

Caffe's arithmetic, layer by layer, as ONNX computes it for any input size:
Convolution and Deconvolution (ConvTranspose: Caffe's deconvolution weights are
already laid out as ONNX's, (C_in, C_out / group, kH, kW)); MAX pooling in ceil
mode (Caffe rounds the output size up); Crop as a Slice whose offset is the
prototxt's (what caffe.coord_map computed when the net was built: one number per
net, whatever the input size) and whose size is the reference input's, read at
run time; Eltwise (SUM with its coefficients, PROD, MAX); Scale with a learned
per-channel factor (the at-once net, SqueezeNet's feature scaling); LRN across
channels (Caffe's and ONNX's formulas agree: x / (k + alpha/n * sum x^2)^beta);
Concat; ReLU. Dropout is the identity at test time and is left out. Any other
layer type is refused in one line naming the layer.

With a ``size`` (H, W) the export is for that input size only, for the consumers
that read no free dimension (OpenCV 4.x refuses them in parseShape; TensorRT and
other static-shape engines want them fixed): N = 1, H and W fixed, and the crop's
reference size read by a plain Shape and a Slice of it, since OpenCV 4.x reads no
Shape with start and end (opset 15; parseSlice). Everything else is the same.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

from fcn.caffemodel import ProtoReader
from fcn.errors import UserError

OPSET = 17
# ModelProto.producer_name and the metadata's made_by: with both, a file is one of ours
# (written_by_us)
PRODUCER = "fcn-caffe"
MADE_BY = "reference.py onnx of the FCN reference reproduction on Caffe"
IR_VERSION = 8            # the IR of opset 17: what every runtime of the last years reads


class ExportError(UserError):
    """A net ONNX cannot express as we export it; one line naming the layer."""


def _hw(p, field, default, plain=None):
    """[h, w] of a Caffe kernel/pad/stride: its ``field``_h/_w when set (Caffe's
    rule), else the plain field (``plain``, default ``field``: one value for both
    axes, or two; a scalar in pooling_param)."""
    if p.HasField(f"{field}_h") or p.HasField(f"{field}_w"):
        return [getattr(p, f"{field}_h"), getattr(p, f"{field}_w")]
    plain = plain or field
    v = getattr(p, plain)
    if isinstance(v, int):
        return [v, v] if p.HasField(plain) else [default, default]
    v = list(v)
    return [v[0], v[-1]] if v else [default, default]


def _conv_attrs(p):
    pad = _hw(p, "pad", 0)
    dilation = list(p.dilation) or [1]
    return dict(kernel_shape=_hw(p, "kernel", 0, "kernel_size"), pads=pad + pad,
                strides=_hw(p, "stride", 1), dilations=[dilation[0], dilation[-1]],
                group=p.group)


class _Graph:
    """ONNX nodes and initializers, with Caffe blob names mapped to value names."""

    def __init__(self, proto, fixed=False):
        self.fixed = fixed                    # a fixed-size export (export's size)
        self.nodes, self.inits = [], []
        self.value = {}                       # blob -> the ONNX value holding it now
        # the last layer that writes a blob names its value after the blob; an
        # earlier writer (the layer before an in-place ReLU) gets "blob/layer";
        # Dropout writes nothing (the identity at test time)
        self.last_writer = {}
        for layer in proto.layer:
            for top in layer.top if layer.type != "Dropout" else ():
                self.last_writer[top] = layer.name

    def out(self, layer, top):
        name = top if self.last_writer[top] == layer.name else f"{top}/{layer.name}"
        self.value[top] = name
        return name

    def const(self, name, array):
        self.inits.append((name, np.asarray(array)))
        return name

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))


def _weights(net, layer):
    return [p.data for p in net.params[layer.name]] if layer.name in net.params else []


def _dropout(g, layer, net, ins):
    g.value[layer.top[0]] = ins[0]


def _convolution(g, layer, net, ins):
    t, name = layer.type, layer.name
    p = layer.convolution_param
    w = _weights(net, layer)
    inputs = [ins[0], g.const(f"{name}/weight", w[0])]
    if p.bias_term:
        inputs.append(g.const(f"{name}/bias", w[1]))
    g.node("Conv" if t == "Convolution" else "ConvTranspose", inputs,
           [g.out(layer, layer.top[0])], name, **_conv_attrs(p))


def _relu(g, layer, net, ins):
    name = layer.name
    slope = layer.relu_param.negative_slope
    if slope:
        g.node("LeakyRelu", ins, [g.out(layer, layer.top[0])], name, alpha=slope)
    else:
        g.node("Relu", ins, [g.out(layer, layer.top[0])], name)


def _pooling(g, layer, net, ins):
    name = layer.name
    p = layer.pooling_param
    out = [g.out(layer, layer.top[0])]
    if p.global_pooling:
        op = {0: "GlobalMaxPool", 1: "GlobalAveragePool"}.get(p.pool)
        if op is None:
            raise ExportError(f"layer {name!r}: stochastic pooling has no ONNX export")
        g.node(op, ins, out, name)
        return
    kernel = _hw(p, "kernel", 0, "kernel_size")
    pad = _hw(p, "pad", 0)
    stride = _hw(p, "stride", 1)
    if any(pad):
        # Caffe drops a last window that starts in the padding; opset 17 does not
        raise ExportError(f"layer {name!r}: padded pooling is not exported")
    if p.pool == 0:
        g.node("MaxPool", ins, out, name, kernel_shape=kernel, strides=stride, ceil_mode=1)
    elif p.pool == 1:
        g.node("AveragePool", ins, out, name, kernel_shape=kernel, strides=stride,
               ceil_mode=1, count_include_pad=0)
    else:
        raise ExportError(f"layer {name!r}: stochastic pooling has no ONNX export")


def _crop(g, layer, net, ins):
    name = layer.name
    p = layer.crop_param
    axis = p.axis if p.axis >= 0 else 4 + p.axis
    axes = list(range(axis, 4))
    offsets = list(p.offset) or [0]
    offsets = offsets * len(axes) if len(offsets) == 1 else offsets
    shape = f"{name}/shape"
    if g.fixed:                           # what OpenCV 4.x reads: Shape, then Slice
        g.node("Shape", [ins[1]], [f"{name}/fullshape"], f"{name}/fullshape")
        g.node("Slice", [f"{name}/fullshape",
                         g.const(f"{name}/from", np.array([axis], np.int64)),
                         g.const(f"{name}/to", np.array([4], np.int64))],
               [shape], f"{name}/shape")
    else:
        g.node("Shape", [ins[1]], [shape], f"{name}/shape", start=axis, end=4)
    starts = g.const(f"{name}/starts", np.array(offsets, np.int64))
    ends = f"{name}/ends"
    g.node("Add", [starts, shape], [ends], f"{name}/ends")
    g.node("Slice", [ins[0], starts, ends, g.const(f"{name}/axes", np.array(axes, np.int64))],
           [g.out(layer, layer.top[0])], name)


def _eltwise(g, layer, net, ins):
    name = layer.name
    p = layer.eltwise_param
    out = [g.out(layer, layer.top[0])]
    if p.operation == 1:                                   # SUM
        coeff = list(p.coeff)
        if coeff and any(c != 1 for c in coeff):
            scaled = []
            for i, (x, c) in enumerate(zip(ins, coeff)):
                k = g.const(f"{name}/coeff{i}", np.array(c, np.float32))
                scaled.append(f"{name}/scaled{i}")
                g.node("Mul", [x, k], [scaled[-1]], f"{name}/mul{i}")
            ins = scaled
        g.node("Sum", ins, out, name)
    elif p.operation == 0:                                 # PROD (Mul takes two)
        _chain(g, "Mul", ins, out, name)
    else:                                                  # MAX
        g.node("Max", ins, out, name)


def _scale(g, layer, net, ins):
    name = layer.name
    p = layer.scale_param
    if len(layer.bottom) != 1 or p.num_axes != 1 or p.axis not in (1, -3):
        raise ExportError(f"layer {name!r}: only a learned per-channel Scale is exported")
    w = _weights(net, layer)
    scale = g.const(f"{name}/scale", w[0].reshape(1, -1, 1, 1))
    out = g.out(layer, layer.top[0])
    if p.bias_term:
        g.node("Mul", [ins[0], scale], [f"{name}/scaled"], f"{name}/mul")
        g.node("Add", [f"{name}/scaled", g.const(f"{name}/bias", w[1].reshape(1, -1, 1, 1))],
               [out], name)
    else:
        g.node("Mul", [ins[0], scale], [out], name)


def _lrn(g, layer, net, ins):
    name = layer.name
    p = layer.lrn_param
    if p.norm_region != 0:
        raise ExportError(f"layer {name!r}: LRN within a channel has no ONNX export")
    g.node("LRN", ins, [g.out(layer, layer.top[0])], name, size=p.local_size,
           alpha=p.alpha, beta=p.beta, bias=p.k)


def _concat(g, layer, net, ins):
    name = layer.name
    p = layer.concat_param
    axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
    g.node("Concat", ins, [g.out(layer, layer.top[0])], name, axis=axis)


# Caffe layer type -> its converter, f(graph, layer, net, the values of its bottoms):
# a new layer type is one function and one entry.
CONVERTERS = {
    "Dropout": _dropout,
    "Convolution": _convolution,
    "Deconvolution": _convolution,
    "ReLU": _relu,
    "Pooling": _pooling,
    "Crop": _crop,
    "Eltwise": _eltwise,
    "Scale": _scale,
    "LRN": _lrn,
    "Concat": _concat,
}


def _convert(g, layer, net):
    """One Caffe layer -> ONNX nodes."""
    if layer.type not in CONVERTERS:
        raise ExportError(f"layer {layer.name!r} of type {layer.type}: no ONNX export for this "
                          "layer type (fcn/onnx_export.py lists the types it exports)")
    CONVERTERS[layer.type](g, layer, net, [g.value[b] for b in layer.bottom])


def _chain(g, op, ins, out, name):
    """A binary ``op`` over two or more inputs, left to right."""
    acc = ins[0]
    for i, x in enumerate(ins[1:]):
        last = i == len(ins) - 2
        nxt = out[0] if last else f"{name}/{op.lower()}{i}"
        g.node(op, [acc, x], [nxt], name if last else f"{name}/{i}")
        acc = nxt


def export(proto, net, outputs, metadata=None, doc="", size=None):
    """The serialized ONNX model (bytes) of a deploy net (``proto``, its NetParameter;
    ``net``, the caffe.Net holding its weights) with the blobs ``outputs`` as the
    graph's outputs, checked by onnx.checker with full shape inference; for inputs of
    any size, or of ``size`` (H, W) only (the module's docstring). The weights are
    copied once into the model, once into the bytes (a VGG-16 FCN is 0.5 GB)."""
    g = _Graph(proto, fixed=size is not None)
    n, hw = ("N", ["H", "W"]) if size is None else (1, [int(v) for v in size])
    inputs = []
    for layer in proto.layer:
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            for i, top in enumerate(layer.top):
                dims = list(shapes[min(i, len(shapes) - 1)].dim)
                if len(dims) != 4:
                    raise ExportError(f"input {top!r} has {len(dims)} axes; N, C, H, W expected")
                inputs.append(helper.make_tensor_value_info(
                    top, TensorProto.FLOAT, [n, int(dims[1]), *hw]))
                g.value[top] = top
            continue
        missing = [b for b in layer.bottom if b not in g.value]
        if missing:
            raise ExportError(f"layer {layer.name!r} reads {missing[0]!r}, which no layer "
                              "before it writes")
        _convert(g, layer, net)
    for o in outputs:
        if g.value.get(o) != o:
            raise ExportError(f"output {o!r} is not a blob of the net")
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT,
                                          [n, int(net.blobs[o].data.shape[1]), None, None])
            for o in outputs]
    graph = helper.make_graph(g.nodes, proto.name or "fcn", inputs, outs, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, ir_version=IR_VERSION)
    for name, array in g.inits:               # straight into the model: no copy of a copy
        t = model.graph.initializer.add()
        t.name, t.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        t.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    data = model.SerializeToString()
    del model
    check(data)
    return data


def check(model):
    """onnx.checker with full shape inference on a model (bytes or ModelProto); one
    line if it fails."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises its own ValidationError / InferenceError types
        raise ExportError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0]}")


# ModelProto's fields (onnx.proto): ir_version, producer_name, graph, metadata_props
# (StringStringEntryProto: key, value)
IR_VERSION_FIELD, PRODUCER_FIELD, GRAPH_FIELD, METADATA_FIELD = 1, 2, 7, 14


def written_by_us(path):
    """True for an ONNX model this project wrote (what reference.py onnx may replace):
    the file reads to its last byte as a ModelProto (protobuf fields, the weights
    skipped, not loaded) that begins with its IR version and the producer_name
    PRODUCER, has a graph, and whose metadata says made_by MADE_BY. A file that merely
    holds those words (a text file, an image's comment) is no such model."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            r = ProtoReader(f, size)
            fields = r.fields(size)
            if next(fields)[:2] != (IR_VERSION_FIELD, 0):
                return False
            field, wire, span = next(fields)
            if (field, wire) != (PRODUCER_FIELD, 2) or span[1] != len(PRODUCER) or \
                    r.string(span) != PRODUCER:
                return False
            graph = made_by = False
            for field, wire, span in fields:
                graph |= field == GRAPH_FIELD and wire == 2
                if field == METADATA_FIELD and wire == 2:
                    f.seek(span[0])
                    entry = {k: v for k, w, v in list(r.fields(span[0] + span[1])) if w == 2}
                    made_by |= all(k in entry and entry[k][1] == len(text.encode()) and
                                   r.string(entry[k]) == text
                                   for k, text in ((1, "made_by"), (2, MADE_BY)))
            return graph and made_by
    except (OSError, EOFError, ValueError, StopIteration, TypeError):
        return False

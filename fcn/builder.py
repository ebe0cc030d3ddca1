"""The builder: every net of the zoo as a NetParameter, from layer helpers, three
backbones (VGG-16, CaffeNet, SqueezeNet, each with its facts in one Backbone
record) and the FCN heads (score, upsampling, skips, crops, losses). Layer names,
order and parameters follow the reference release (fcn.berkeleyvision.org), so
its caffemodels load by name; docs/zoo.md lists where and why anything differs.
The zoo (which model is built how) and the generated files are fcn/zoo.py's.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import caffe
from caffe import layers as L, params as P
from caffe.coord_map import crop

from fcn import datasets
from fcn.datasets.base import IGNORE
from fcn.errors import FcnError

ATONCE_SCALE = {"pool4": 0.01, "pool3": 0.0001}
# What the net reads -> its input tops and their channels: 'color' (an image) and
# 'hha' read one 3-channel top 'data'; 'color-d' (early fusion) concatenates color
# and 1-channel log-depth into 'data'; 'color-hha' (late fusion) runs one stream per
# input and sums their scores.
MODALITIES = {
    "color": (("data", 3),),
    "hha": (("data", 3),),
    "color-d": (("color", 3), ("depth", 1)),
    "color-hha": (("color", 3), ("hha", 3)),
}

LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
FROZEN = [dict(lr_mult=0)]


class BuildError(FcnError, ValueError):
    """A net that cannot be built, with a one-line reason."""


@dataclass(frozen=True)
class Head:
    """One output of the net: its suffix on layer names, classes and label top."""
    suffix: str
    num_classes: int
    label: str


@dataclass(frozen=True)
class Data:
    """Where the Python data layer reads: a dataset of fcn/datasets and a split."""
    dataset: str
    split: str


# ---------------------------------------------------------------------------
# Layers


def conv_relu(bottom, nout, ks=3, stride=1, pad=1, group=None, param=LEARNED):
    kw = dict(kernel_size=ks, stride=stride, num_output=nout, pad=pad)
    if group is not None:
        kw["group"] = group
    if param is not None:
        kw["param"] = param
    conv = L.Convolution(bottom, **kw)
    return conv, L.ReLU(conv, in_place=True)


def max_pool(bottom, ks=2, stride=2):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def score_conv(bottom, num_classes):
    return L.Convolution(bottom, num_output=num_classes, kernel_size=1, pad=0, param=LEARNED)


def upsample(bottom, num_classes, stride, backbone):
    """Fixed (lr_mult 0) deconvolution, bilinear-initialised by surgery.interp. Its
    kernel is 2 x stride, or 2 x stride - 1 for backbones that pool with 3x3 windows
    at stride 2: those put features on half-pixel positions, and only an odd kernel
    keeps the crop offsets whole (the release's FCN-AlexNet: 63 for stride 32)."""
    kernel = 2 * stride - BACKBONES[backbone].odd_upsampling
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=num_classes, kernel_size=kernel, stride=stride,
        bias_term=False), param=FROZEN)


# ---------------------------------------------------------------------------
# Backbones. Each adds its layers to the NetSpec under `sfx`-suffixed names and
# returns the tops the heads need: "last" (the last feature map: VGG-16's and
# CaffeNet's drop7, SqueezeNet's drop9; score_fr's input in the FCN, the
# classifier's input otherwise) and the skips ("pool4", "pool3"; "fire8", "fire4").


def fc_layers(n, bottom, name, fc6_kernel, fully_conv, param, group=None):
    """fc6 and fc7 (4096 each, ReLU, Dropout 0.5): fully connected in the classifier,
    a fc6_kernel-sized and a 1x1 convolution in the FCN."""
    for fc, kernel, relu, drop in (("fc6", fc6_kernel, "relu6", "drop6"),
                                   ("fc7", 1, "relu7", "drop7")):
        if fully_conv:
            n[name(fc)], n[name(relu)] = conv_relu(bottom, 4096, ks=kernel, pad=0, param=param,
                                                   group=group)
        else:
            n[name(fc)] = L.InnerProduct(bottom, num_output=4096,
                                         **({"param": param} if param else {}))
            n[name(relu)] = L.ReLU(n[name(fc)], in_place=True)
        n[name(drop)] = L.Dropout(n[name(relu)], dropout_ratio=0.5, in_place=True)
        bottom = n[name(drop)]


def vgg16(n, bottom, sfx="", fully_conv=True, conv1_name=None):
    """VGG-16 (ILSVRC-2014 VGG team, 16 layers). The FCN form pads conv1_1 by 100
    and turns fc6/fc7 into 7x7 and 1x1 convolutions."""
    name = lambda base: base + sfx  # noqa: E731
    n[conv1_name or name("conv1_1")], n[name("relu1_1")] = conv_relu(
        bottom, 64, pad=100 if fully_conv else 1)
    top = n[name("relu1_1")]
    widths = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    for block, width, depth in widths:
        for i in range(1, depth + 1):
            if (block, i) == (1, 1):
                continue
            n[name(f"conv{block}_{i}")], n[name(f"relu{block}_{i}")] = conv_relu(top, width)
            top = n[name(f"relu{block}_{i}")]
        n[name(f"pool{block}")] = max_pool(top)
        top = n[name(f"pool{block}")]
    fc_layers(n, top, name, 7, fully_conv, LEARNED)
    return {"last": n[name("drop7")], "pool4": n[name("pool4")], "pool3": n[name("pool3")]}


def caffenet(n, bottom, sfx="", fully_conv=True, conv1_name=None):
    """CaffeNet (BVLC's AlexNet variant, pooling before normalisation). As in the
    release, its layers carry no lr/decay multipliers."""
    name = lambda base: base + sfx  # noqa: E731
    n[conv1_name or name("conv1")], n[name("relu1")] = conv_relu(
        bottom, 96, ks=11, stride=4, pad=100 if fully_conv else 0, group=1, param=None)
    n[name("pool1")] = max_pool(n[name("relu1")], 3, 2)
    n[name("norm1")] = L.LRN(n[name("pool1")], local_size=5, alpha=1e-4, beta=0.75)
    n[name("conv2")], n[name("relu2")] = conv_relu(n[name("norm1")], 256, ks=5, pad=2,
                                                   group=2, param=None)
    n[name("pool2")] = max_pool(n[name("relu2")], 3, 2)
    n[name("norm2")] = L.LRN(n[name("pool2")], local_size=5, alpha=1e-4, beta=0.75)
    n[name("conv3")], n[name("relu3")] = conv_relu(n[name("norm2")], 384, pad=1, group=1,
                                                   param=None)
    n[name("conv4")], n[name("relu4")] = conv_relu(n[name("relu3")], 384, pad=1, group=2,
                                                   param=None)
    n[name("conv5")], n[name("relu5")] = conv_relu(n[name("relu4")], 256, pad=1, group=2,
                                                   param=None)
    n[name("pool5")] = max_pool(n[name("relu5")], 3, 2)
    fc_layers(n, n[name("pool5")], name, 6, fully_conv, None, group=1)
    return {"last": n[name("drop7")]}


# SqueezeNet v1.0 (Iandola et al. 2016): conv1, eight fire modules (squeeze 1x1 ->
# expand 1x1 + 3x3, concatenated), max pools after conv1, fire4 and fire8; the
# classifier ends in a 1000-way 1x1 convolution and global average pooling.
FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192),
         8: (64, 256), 9: (64, 256)}
# The smallest conv1 padding for which every input size (1 px and up) gets a score
# map covering it with whole crop offsets; the paper's 100 for VGG-16 has the same
# purpose (VGG's fc6 is a 7x7 valid convolution, SqueezeNet has none).
SQUEEZENET_PAD = 10


def squeezenet(n, bottom, sfx="", fully_conv=True, conv1_name=None):
    """SqueezeNet v1.0 under its release layer names, with xavier fillers as in the
    original prototxt (so the net can also train from scratch). The FCN form pads
    conv1 by SQUEEZENET_PAD and stops after drop9 (stride 16)."""
    xavier = dict(weight_filler=dict(type="xavier"))
    param = LEARNED if fully_conv else None

    def conv(name, bottom, nout, ks, stride=1, pad=0):
        kw = dict(kernel_size=ks, num_output=nout, **xavier)
        if stride != 1:
            kw["stride"] = stride
        if pad:
            kw["pad"] = pad
        if param:
            kw["param"] = param
        n[name] = L.Convolution(bottom, **kw)
        return n[name]

    def relu(name, bottom):
        n[name] = L.ReLU(bottom, in_place=True)
        return n[name]

    top = relu("relu_conv1", conv(conv1_name or "conv1", bottom, 96, 7, 2,
                                  SQUEEZENET_PAD if fully_conv else 0))
    n.pool1 = max_pool(top, 3, 2)
    top, feats = n.pool1, {}
    for i in range(2, 10):
        squeeze, expand = FIRES[i]
        f = f"fire{i}/"
        s1 = relu(f + "relu_conv1x1_1", conv(f + "conv1x1_1", top, squeeze, 1))
        e1 = relu(f + "relu_conv1x1_2", conv(f + "conv1x1_2", s1, expand, 1))
        e3 = relu(f + "relu_conv3x3_2", conv(f + "conv3x3_2", s1, expand, 3, pad=1))
        n[f + "concat"] = L.Concat(e1, e3)
        top = feats[f"fire{i}"] = n[f + "concat"]
        if i in (4, 8):
            n[f"pool{i}"] = max_pool(top, 3, 2)
            top = n[f"pool{i}"]
    n.drop9 = L.Dropout(top, dropout_ratio=0.5, in_place=True)
    if not fully_conv:
        n.conv_final = L.Convolution(n.drop9, num_output=1000, pad=1, kernel_size=1,
                                     weight_filler=dict(type="gaussian", mean=0.0, std=0.01))
        n.relu_conv_final = L.ReLU(n.conv_final, in_place=True)
        n.pool_final = L.Pooling(n.relu_conv_final, pool=P.Pooling.AVE, global_pooling=True)
    return {"last": n.drop9, "fire8": feats["fire8"], "fire4": feats["fire4"]}


@dataclass(frozen=True)
class Backbone:
    """Everything the heads need to know of a backbone, in one record."""
    build: Callable                  # adds its layers to a NetSpec, returns its feature tops
    native_stride: int               # the stride of its last feature map ("last")
    # the skips finer nets fuse, coarse to fine: (feature key, its stride);
    # FCN-VGG16: 32s, 16s (+pool4), 8s (+pool3)
    skips: Tuple[Tuple[str, int], ...] = ()
    # fixed scales on the features each score layer reads, always (not only at once):
    # SqueezeNet's ImageNet features are large (RMS on CamVid: fire9 32, fire8 38,
    # fire4 220), so zero-initialised score layers take a first SGD step that blows
    # the scores up; scaling them to about unit size conditions the optimisation, as
    # the at-once FCN's pool4/pool3 scales do
    feature_scale: Tuple[Tuple[str, float], ...] = ()
    odd_upsampling: bool = False     # 3x3/2 pooling: odd kernels keep crops whole (upsample)
    crop_upsampled: bool = False     # no valid fc6: crop the upsampled path to the skip

    def scale(self, key):
        return dict(self.feature_scale).get(key)

    @property
    def strides(self):
        return [self.native_stride] + [s for _, s in self.skips]


BACKBONES = {
    "vgg16": Backbone(vgg16, 32, skips=(("pool4", 16), ("pool3", 8))),
    "caffenet": Backbone(caffenet, 32, odd_upsampling=True),
    "squeezenet": Backbone(squeezenet, 16, skips=(("fire8", 8), ("fire4", 4)),
                           feature_scale=(("last", 1 / 32), ("fire8", 1 / 32),
                                          ("fire4", 1 / 256)),
                           odd_upsampling=True, crop_upsampled=True),
}


# ---------------------------------------------------------------------------
# The FCN


def fixed_scale(bottom, value):
    """Multiply by a constant (a Scale layer that does not learn)."""
    return L.Scale(bottom, filler=dict(type="constant", value=value), param=FROZEN)


def score_fr(n, feats, num_classes, sfx, backbone):
    """The score layer on the backbone's last features (scaled first where the
    backbone's feature_scale says so)."""
    top = feats["last"]
    scale = BACKBONES[backbone].scale("last")
    if scale is not None:
        top = n["scale_fr" + sfx] = fixed_scale(top, scale)
    n["score_fr" + sfx] = score_conv(top, num_classes)
    return n["score_fr" + sfx]


def skip_head(n, score_fr, feats, num_classes, stride, sfx, crop_to, atonce=False,
              backbone="vgg16"):
    """Upsample the backbone's score map to the input, fusing finer skips on the way
    (FCN-VGG16: pool4 for 16s, then pool3 for 8s); the at-once net scales pool4 /
    pool3 by 1e-2 / 1e-4 first."""
    bb = BACKBONES[backbone]
    native = bb.native_stride
    if stride == native:
        n["upscore" + sfx] = upsample(score_fr, num_classes, native, backbone)
        n["score" + sfx] = crop(n["upscore" + sfx], crop_to)
        return
    fused = score_fr
    up = "upscore2" + sfx
    for key, skip_stride in bb.skips:
        n[up] = upsample(fused, num_classes, 2, backbone)
        skip = feats[key]
        scale = ATONCE_SCALE[key] if atonce else bb.scale(key)
        if scale is not None:
            skip = n["scale_" + key + sfx] = fixed_scale(skip, scale)
        n["score_" + key + sfx] = score_conv(skip, num_classes)
        if bb.crop_upsampled:
            # the coarse path does not shrink (no valid fc6), so its upsampling covers
            # more than the skip: crop it to the skip instead
            n[up + "c"] = crop(n[up], n["score_" + key + sfx])
            n["fuse_" + key + sfx] = L.Eltwise(n[up + "c"], n["score_" + key + sfx],
                                               operation=P.Eltwise.SUM)
        else:
            n["score_" + key + sfx + "c"] = crop(n["score_" + key + sfx], n[up])
            n["fuse_" + key + sfx] = L.Eltwise(n[up], n["score_" + key + sfx + "c"],
                                               operation=P.Eltwise.SUM)
        fused = n["fuse_" + key + sfx]
        if stride == skip_stride:
            n[f"upscore{stride}" + sfx] = upsample(fused, num_classes, stride, backbone)
            n["score" + sfx] = crop(n[f"upscore{stride}" + sfx], crop_to)
            return
        up = "upscore_" + key + sfx


def validate(backbone, stride, heads, modality):
    if backbone not in BACKBONES:
        raise BuildError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    strides = BACKBONES[backbone].strides
    if stride not in strides:
        raise BuildError(f"unknown stride {stride!r} for {backbone}; its FCN strides are "
                         f"{', '.join(map(str, strides))}")
    if modality not in MODALITIES:
        raise BuildError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    if not heads:
        raise BuildError("a net needs at least one head")
    for h in heads:
        if not isinstance(h.num_classes, int) or h.num_classes < 1:
            raise BuildError(f"head {h.suffix or 'score'!r} has {h.num_classes!r} classes; "
                             "it needs at least 1")
    if modality == "color-hha" and (stride != 32 or len(heads) != 1):
        raise BuildError("late color-HHA fusion is defined for one stride-32 head")


def fcn(backbone="vgg16", stride=32, heads=(Head("", 21, "label"),), modality="color",
        data: Optional[Data] = None, atonce=False, normalize=False,
        seed=1337, input_hw=(500, 500)):
    """Build one FCN as a NetParameter. `data` None gives the deploy net (Input
    layer(s), no loss); otherwise the Python data layer reads `data` and every
    head gets a SoftmaxWithLoss."""
    validate(backbone, stride, heads, modality)
    n = caffe.NetSpec()
    inputs = [name for name, _ in MODALITIES[modality]]
    labels = [h.label for h in heads]
    if data is None:
        tops = L.Input(ntop=len(inputs), shape=[dict(dim=[1, c, *input_hw])
                                                for _, c in MODALITIES[modality]])
        names = inputs
    else:
        tops = L.Python(module="layers", layer=datasets.DATASETS[data.dataset].layer,
                        ntop=len(inputs) + len(labels),
                        param_str=datasets.param_str(data.dataset, data.split, modality,
                                                     labels, seed))
        names = inputs + labels
    for name, top in zip(names, tops if isinstance(tops, tuple) else (tops,)):
        n[name] = top
    if modality == "color-d":
        n.data = L.Concat(n.color, n.depth)

    build_backbone = BACKBONES[backbone].build
    if modality == "color-hha":
        scores = []
        for m in inputs:
            feats = build_backbone(n, n[m], sfx=m)
            scores.append(score_fr(n, feats, heads[0].num_classes, m, backbone))
        n.score_fused = L.Eltwise(*scores, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
        skip_head(n, n.score_fused, feats, heads[0].num_classes, 32, "", n.color,
                  backbone=backbone)
        add_loss(n, heads[0], 0, data, normalize)
    else:
        feats = build_backbone(n, n.data, conv1_name="conv1_1_bgrd" if modality == "color-d"
                               else None)
        for i, h in enumerate(heads):
            skip_head(n, score_fr(n, feats, h.num_classes, h.suffix, backbone), feats, h.num_classes, stride, h.suffix,
                      n.data, atonce, backbone)
            add_loss(n, h, i, data, normalize)

    proto = n.to_proto()
    if data is None:
        proto.layer[0].name = "input"
    return proto


def add_loss(n, head, index, data, normalize):
    if data is None:
        return
    # The first head's loss is "loss" (the release's name), the others "loss<suffix>".
    n["loss" if index == 0 else "loss" + head.suffix] = L.SoftmaxWithLoss(
        n["score" + head.suffix], n[head.label],
        loss_param=dict(normalize=normalize, ignore_label=IGNORE))


def classifier(backbone, input_hw):
    """An ILSVRC classifier's deploy net: the backbone with fully connected fc6/fc7,
    fc8 of 1000 classes and a softmax."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, *input_hw]))
    feats = BACKBONES[backbone].build(n, n.data, fully_conv=False)
    if backbone != "squeezenet":               # SqueezeNet ends in its own pool_final
        n.fc8 = L.InnerProduct(feats["last"], num_output=1000,
                               **({"param": LEARNED} if backbone == "vgg16" else {}))
        n.prob = L.Softmax(n.fc8)
    proto = n.to_proto()
    proto.layer[0].name = "input"
    return proto


def fcn_backbone(backbone, input_hw=(500, 500)):
    """Only the backbone in fully convolutional form (conv1 ... fc7, conv1 padded by
    100): the net of the FCN initialisations, which every FCN of that backbone
    loads by name whatever its heads."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, *input_hw]))
    BACKBONES[backbone].build(n, n.data)
    proto = n.to_proto()
    proto.layer[0].name = "input"
    return proto

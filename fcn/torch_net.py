"""The zoo's nets in PyTorch, read from our prototxts, with Caffe's weights: the
peer the benchmarks (bench/speed.py) and the GPU check time Caffe against.

A small interpreter: every layer type the FCNs use (Input, Convolution, ReLU,
Pooling with Caffe's ceil rounding, Dropout, Deconvolution, Crop, Eltwise SUM,
Concat, Scale with a fixed factor, SoftmaxWithLoss) maps to its PyTorch
equivalent in LAYERS (a new layer type is one function and one entry), blob names
kept, so the same net runs in both frameworks on the same weights; and Caffe's SGD
step (sgd_step). Imports PyTorch: imported only where it is installed.
"""
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from caffe.proto import caffe_pb2


def first(repeated, default):
    return repeated[0] if len(repeated) else default


class TorchNet(torch.nn.Module):
    def __init__(self, prototxt, caffe_net):
        super().__init__()
        self.proto = text_format.Parse(open(prototxt).read(), caffe_pb2.NetParameter())
        self.params = torch.nn.ParameterDict()
        self.lr_mult, self.decay_mult = {}, {}
        for layer in self.proto.layer:
            if layer.type not in ("Convolution", "Deconvolution"):
                continue
            c = layer.convolution_param
            key = layer.name.replace("/", "__")
            blobs = [torch.from_numpy(b.data.copy()) for b in caffe_net.params[layer.name]]
            self.params[key + "__w"] = torch.nn.Parameter(blobs[0])
            if c.bias_term:
                self.params[key + "__b"] = torch.nn.Parameter(blobs[1])
            mults = [(p.lr_mult, p.decay_mult) for p in layer.param] or [(1, 1), (1, 1)]
            for suffix, (lr, decay) in zip(("__w", "__b"), mults + [(1, 1)] * 2):
                self.lr_mult[key + suffix] = lr
                self.decay_mult[key + suffix] = decay
                if lr == 0 and key + suffix in self.params:
                    self.params[key + suffix].requires_grad_(False)

    def forward(self, **inputs):
        blobs = dict(inputs)
        for layer in self.proto.layer:
            if layer.type == "Input":
                continue
            if layer.type not in LAYERS:
                raise NotImplementedError(layer.type)
            x = blobs[layer.bottom[0]] if layer.bottom else None
            blobs[layer.top[0]] = LAYERS[layer.type](self, layer, x, blobs)
        return blobs

    def sgd(self, base_lr, momentum, weight_decay):
        """Caffe's SGD with per-parameter lr and decay multipliers (as param groups)."""
        groups = []
        for name, p in self.params.items():
            if p.requires_grad:
                groups.append({"params": [p], "lr": base_lr * self.lr_mult[name],
                               "weight_decay": weight_decay * self.decay_mult[name]})
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)


def _key(layer):
    return layer.name.replace("/", "__")


def _convolution(net, layer, x, blobs):
    c = layer.convolution_param
    return F.conv2d(x, net.params[_key(layer) + "__w"], net.params.get(_key(layer) + "__b"),
                    stride=first(c.stride, 1), padding=first(c.pad, 0),
                    dilation=first(c.dilation, 1), groups=c.group)


def _deconvolution(net, layer, x, blobs):
    c = layer.convolution_param
    return F.conv_transpose2d(x, net.params[_key(layer) + "__w"],
                              net.params.get(_key(layer) + "__b"), stride=first(c.stride, 1),
                              padding=first(c.pad, 0), groups=c.group)


def _pooling(net, layer, x, blobs):
    p = layer.pooling_param
    if p.pool == p.MAX:
        return F.max_pool2d(x, p.kernel_size, p.stride, p.pad, ceil_mode=True)
    if p.global_pooling:
        return x.mean(dim=(2, 3), keepdim=True)
    return F.avg_pool2d(x, p.kernel_size, p.stride, p.pad, ceil_mode=True)


def _crop(net, layer, x, blobs):
    ref = blobs[layer.bottom[1]]
    off = list(layer.crop_param.offset)
    oh, ow = (off + off)[:2] if len(off) == 1 else off
    return x[:, :, oh:oh + ref.shape[2], ow:ow + ref.shape[3]]


def _eltwise(net, layer, x, blobs):
    coeff = list(layer.eltwise_param.coeff) or [1.0] * len(layer.bottom)
    return sum(c * blobs[b] for c, b in zip(coeff, layer.bottom))


def _softmax_loss(net, layer, x, blobs):
    label = blobs[layer.bottom[1]][:, 0].long()
    return F.cross_entropy(x, label, ignore_index=layer.loss_param.ignore_label,
                           reduction="sum" if not layer.loss_param.normalize else "mean")


# Caffe layer type -> its PyTorch form: f(net, layer, first bottom, every blob) -> top.
LAYERS = {
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "ReLU": lambda net, layer, x, blobs: F.relu(x),
    "Dropout": lambda net, layer, x, blobs: F.dropout(x, layer.dropout_param.dropout_ratio,
                                                      net.training),
    "Pooling": _pooling,
    "Crop": _crop,
    "Eltwise": _eltwise,
    "Concat": lambda net, layer, x, blobs: torch.cat([blobs[b] for b in layer.bottom], dim=1),
    "Scale": lambda net, layer, x, blobs: x * layer.scale_param.filler.value,
    "SoftmaxWithLoss": _softmax_loss,
}


def sgd_step(net, inputs, base_lr=1e-10, momentum=0.99, weight_decay=5e-4):
    """One SGD iteration of ``net`` (a training TorchNet) on ``inputs`` as Caffe's solver
    does it (forward, backward, the update with Caffe's multipliers): a function
    returning the loss tensor, not read back (the caller decides when to wait)."""
    opt = net.sgd(base_lr=base_lr, momentum=momentum, weight_decay=weight_decay)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = net(**inputs)["loss"]
        loss.backward()
        opt.step()
        return loss
    return step


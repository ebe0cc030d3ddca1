"""The zoo's nets in PyTorch, read from our prototxts, with Caffe's weights.

A small interpreter: every layer type the FCNs use (Input, Convolution, ReLU,
Pooling with Caffe's ceil rounding, Dropout, Deconvolution, Crop, Eltwise SUM,
Concat, Scale with a fixed factor, SoftmaxWithLoss) maps to its PyTorch
equivalent, blob names kept, so the same net runs in both frameworks on the same
weights. Used by bench/speed.py; not part of the project's API.
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
            t = layer.type
            if t == "Input":
                continue
            x = blobs[layer.bottom[0]] if layer.bottom else None
            key = layer.name.replace("/", "__")
            if t == "Convolution":
                c = layer.convolution_param
                y = F.conv2d(x, self.params[key + "__w"], self.params.get(key + "__b"),
                             stride=first(c.stride, 1), padding=first(c.pad, 0),
                             dilation=first(c.dilation, 1), groups=c.group)
            elif t == "Deconvolution":
                c = layer.convolution_param
                y = F.conv_transpose2d(x, self.params[key + "__w"], self.params.get(key + "__b"),
                                       stride=first(c.stride, 1), padding=first(c.pad, 0),
                                       groups=c.group)
            elif t == "ReLU":
                y = F.relu(x)
            elif t == "Dropout":
                y = F.dropout(x, layer.dropout_param.dropout_ratio, self.training)
            elif t == "Pooling":
                p = layer.pooling_param
                if p.pool == p.MAX:
                    y = F.max_pool2d(x, p.kernel_size, p.stride, p.pad, ceil_mode=True)
                elif p.global_pooling:
                    y = x.mean(dim=(2, 3), keepdim=True)
                else:
                    y = F.avg_pool2d(x, p.kernel_size, p.stride, p.pad, ceil_mode=True)
            elif t == "Crop":
                ref = blobs[layer.bottom[1]]
                off = list(layer.crop_param.offset)
                oh, ow = (off + off)[:2] if len(off) == 1 else off
                y = x[:, :, oh:oh + ref.shape[2], ow:ow + ref.shape[3]]
            elif t == "Eltwise":
                coeff = list(layer.eltwise_param.coeff) or [1.0] * len(layer.bottom)
                y = sum(c * blobs[b] for c, b in zip(coeff, layer.bottom))
            elif t == "Concat":
                y = torch.cat([blobs[b] for b in layer.bottom], dim=1)
            elif t == "Scale":
                y = x * layer.scale_param.filler.value
            elif t == "SoftmaxWithLoss":
                label = blobs[layer.bottom[1]][:, 0].long()
                y = F.cross_entropy(x, label, ignore_index=layer.loss_param.ignore_label,
                                    reduction="sum" if not layer.loss_param.normalize else "mean")
            else:
                raise NotImplementedError(t)
            blobs[layer.top[0]] = y
        return blobs

    def sgd(self, base_lr, momentum, weight_decay):
        """Caffe's SGD with per-parameter lr and decay multipliers (as param groups)."""
        groups = []
        for name, p in self.params.items():
            if p.requires_grad:
                groups.append({"params": [p], "lr": base_lr * self.lr_mult[name],
                               "weight_decay": weight_decay * self.decay_mult[name]})
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)

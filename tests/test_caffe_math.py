"""The layers our Caffe patches touch (im2col/col2im inside Convolution and
Deconvolution, FCN's channel-by-channel upsampling, max pooling, ReLU, Softmax and
SoftmaxWithLoss, Crop, Concat, the shared im2col buffer) against straightforward
numpy references, forward and backward."""
import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from conftest import REPO, assert_f32_close
from fcn import memory

caffe.set_mode_cpu()
RNG = np.random.default_rng(0)


def one_layer_net(tmp_path, shape, make, extra_inputs=()):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    tops = [n.data]
    for name, s in extra_inputs:
        n[name] = L.Input(shape=dict(dim=list(s)))
        tops.append(n[name])
    n.out = make(*tops)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TEST)


def conv_ref(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    eh, ew = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    oh, ow = (h + 2 * pad - eh) // stride + 1, (wd + 2 * pad - ew) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation: i * dilation + stride * (oh - 1) + 1: stride,
                           j * dilation: j * dilation + stride * (ow - 1) + 1: stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch,
                                                         w[g * og:(g + 1) * og, :, i, j])
    return out + b[None, :, None, None]


@pytest.mark.parametrize("k,stride,pad,dilation,group", [
    (3, 1, 1, 1, 1), (3, 1, 100, 1, 1), (7, 2, 10, 1, 1), (5, 2, 2, 1, 2), (3, 1, 2, 2, 1),
    (11, 4, 100, 1, 1), (1, 1, 0, 1, 1), (3, 3, 0, 1, 1)])
def test_convolution_forward_and_backward(tmp_path, k, stride, pad, dilation, group):
    shape = (2, 4, 13, 17)
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=k, stride=stride, pad=pad, dilation=dilation, group=group,
        num_output=6, weight_filler=dict(type="gaussian", std=1),
        bias_filler=dict(type="gaussian", std=1)))
    x = RNG.standard_normal(shape).astype(np.float32)
    w, b = (p.data.astype(np.float64) for p in net.params["out"])
    y = net.forward(data=x)["out"]
    want = conv_ref(x.astype(np.float64), w, b, stride, pad, dilation, group)
    assert_f32_close(y, want, shape[1] // group * k * k)

    # backward: the input gradient is the adjoint, checked through <dy, conv(dx)> = <conv^T dy, dx>
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.backward()
    dx = net.blobs["data"].diff.astype(np.float64)
    probe = RNG.standard_normal(shape)
    lhs = np.sum(g * (conv_ref(probe, w, np.zeros_like(b), stride, pad, dilation, group)))
    assert np.sum(dx * probe) == pytest.approx(lhs, rel=1e-4)
    # weight gradient of a linear layer: sum over positions of dy * patch
    dw = net.params["out"][0].diff.astype(np.float64)
    eps_w = np.zeros_like(w)
    eps_w[1, 0, k // 2, k // 2] = 1
    assert dw[1, 0, k // 2, k // 2] == pytest.approx(
        np.sum(g * conv_ref(x.astype(np.float64), eps_w, np.zeros_like(b), stride, pad,
                            dilation, group)), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("k,stride", [(4, 2), (3, 2), (16, 8), (15, 8), (63, 32)])
def test_deconvolution_is_the_adjoint_of_convolution(tmp_path, k, stride):
    shape = (1, 3, 5, 6)
    net = one_layer_net(tmp_path, shape, lambda d: L.Deconvolution(d, convolution_param=dict(
        num_output=3, kernel_size=k, stride=stride, bias_term=False,
        weight_filler=dict(type="gaussian", std=1))))
    x = RNG.standard_normal(shape).astype(np.float32)
    y = net.forward(data=x)["out"].astype(np.float64)
    w = net.params["out"][0].data.astype(np.float64)     # (in, out, k, k)
    probe = RNG.standard_normal(y.shape)
    # <deconv(x), probe> = <x, conv(probe)> with the same weights seen as (out=in, in=out)
    conv_probe = conv_ref(probe, w, np.zeros(3), stride, 0, 1, 1)
    assert np.sum(y * probe) == pytest.approx(np.sum(x * conv_probe), rel=1e-4)


def pool_ref(x, k, stride, pad):
    n, c, h, w = x.shape
    oh = int(np.ceil((h + 2 * pad - k) / stride)) + 1
    ow = int(np.ceil((w + 2 * pad - k) / stride)) + 1
    if pad and (oh - 1) * stride >= h + pad:
        oh -= 1
    if pad and (ow - 1) * stride >= w + pad:
        ow -= 1
    out = np.full((n, c, oh, ow), -np.inf)
    arg = np.zeros((n, c, oh, ow), int)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = max(i * stride - pad, 0), max(j * stride - pad, 0)
            h1, w1 = min(i * stride - pad + k, h), min(j * stride - pad + k, w)
            win = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            a = win.argmax(axis=2)
            out[:, :, i, j] = win.max(axis=2)
            arg[:, :, i, j] = (h0 + a // (w1 - w0)) * w + (w0 + a % (w1 - w0))
    return out, arg


@pytest.mark.parametrize("k,stride,pad,hw", [(2, 2, 0, (13, 17)), (3, 2, 0, (13, 17)),
                                            (3, 2, 1, (12, 9)), (3, 1, 0, (300, 41)),
                                            (2, 2, 0, (301, 240)), (2, 2, 1, (15, 12)),
                                            (2, 1, 0, (40, 33))])
def test_max_pooling_forward_and_backward(tmp_path, k, stride, pad, hw):
    shape = (2, 5, *hw)
    net = one_layer_net(tmp_path, shape, lambda d: L.Pooling(
        d, pool=P.Pooling.MAX, kernel_size=k, stride=stride, pad=pad))
    x = RNG.permutation(np.prod(shape)).reshape(shape).astype(np.float32)   # no ties
    y = net.forward(data=x)["out"]
    want, arg = pool_ref(x, k, stride, pad)
    np.testing.assert_array_equal(y, want)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.backward()
    dx = np.zeros(shape, np.float64).reshape(shape[0], shape[1], -1)
    for i in range(shape[0]):
        for c in range(shape[1]):
            np.add.at(dx[i, c], arg[i, c].ravel(), g[i, c].ravel())
    np.testing.assert_allclose(net.blobs["data"].diff, dx.reshape(shape), rtol=1e-5, atol=1e-5)


def test_max_pooling_of_nan_and_infinite_windows(tmp_path):
    """Patch 0013: a window of NaN, -inf or -FLT_MAX values (a diverged net) has a real
    argmax, its first element; before, the argmax stayed -1 and the backward pass wrote
    into bottom_diff[-1], before the blob (heap corruption). NaN propagates."""
    shape = (1, 3, 4, 4)
    net = one_layer_net(tmp_path, shape, lambda d: L.Pooling(
        d, pool=P.Pooling.MAX, kernel_size=2, stride=2))
    x = RNG.standard_normal(shape).astype(np.float32)
    x[0, 0] = np.nan
    x[0, 1] = -np.inf
    x[0, 2, :2, :2] = -np.finfo(np.float32).max
    y = net.forward(data=x)["out"].copy()
    assert np.isnan(y[0, 0]).all() and (y[0, 1] == -np.inf).all()
    assert y[0, 2, 0, 0] == -np.finfo(np.float32).max
    want, _ = pool_ref(np.nan_to_num(x[:, 2:], nan=0.0), 2, 2, 0)
    np.testing.assert_array_equal(y[0, 2, 1:], want[0, 0, 1:])
    g = np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape)
    net.blobs["out"].diff[...] = g
    net.backward()
    dx = net.blobs["data"].diff
    for c in (0, 1):                 # each window's gradient goes to its first element
        np.testing.assert_array_equal(dx[0, c, ::2, ::2], g[0, c])
        assert dx[0, c].sum() == g[0, c].sum()
    assert dx[0, 2, 0, 0] == g[0, 2, 0, 0] and dx.sum() == g.sum()


def test_max_pooling_of_nan_windows_3x3(tmp_path):
    """3x3 windows, stride 2 (SqueezeNet's pools; patch 0022's short path): a NaN first in its window
    propagates, a NaN later in a window is passed over, -inf windows keep their first
    element as argmax; the same values and gradients as numpy's first maximum."""
    shape = (1, 3, 7, 9)
    net = one_layer_net(tmp_path, shape, lambda d: L.Pooling(
        d, pool=P.Pooling.MAX, kernel_size=3, stride=2))
    x = RNG.permutation(np.prod(shape)).reshape(shape).astype(np.float32)
    x[0, 0] = np.nan
    x[0, 1] = -np.inf
    x[0, 2, 0, 0] = np.nan                      # first of window (0, 0): propagates
    x[0, 2, 3, 3] = np.nan                      # inside windows (1, 1) and (1, 2): passed over
    y = net.forward(data=x)["out"].copy()
    assert np.isnan(y[0, 0]).all() and (y[0, 1] == -np.inf).all() and np.isnan(y[0, 2, 0, 0])
    want, _ = pool_ref(np.nan_to_num(x[:, 2:], nan=-np.inf), 3, 2, 0)
    np.testing.assert_array_equal(y[0, 2].ravel()[1:], want[0, 0].ravel()[1:])
    net.blobs["out"].diff[...] = 1.0
    net.backward()
    dx = net.blobs["data"].diff
    for c in (0, 1):                             # each window's gradient: its first element
        np.testing.assert_array_equal(dx[0, c, 0:5:2, 0:7:2], 1.0)
        assert dx[0, c].sum() == y[0, c].size
    assert dx[0, 2, 3, 3] == 0 and dx[0, 2, 0, 0] == 1.0


@pytest.mark.parametrize("hw", [(4, 6), (301, 240)])
@pytest.mark.parametrize("k", [2, 3])
def test_max_pooling_ties_go_to_the_first_maximum(tmp_path, hw, k):
    """Windows of equal values (a ReLU's zeros): the gradient goes to the first of
    them in row-major order, in the 2x2 and 3x3 windows of patches 0019 and 0022's
    short path as in the general loop (the partial windows at the odd edge)."""
    shape = (1, 2, hw[0] + 1, hw[1] + 1)
    net = one_layer_net(tmp_path, shape, lambda d: L.Pooling(
        d, pool=P.Pooling.MAX, kernel_size=k, stride=2))
    x = np.zeros(shape, np.float32)
    x[0, 1, 1::2, 1::2] = 1.0                    # channel 1: a tie at the maximum 1 too
    x[0, 1, 1::2, ::2] = 1.0
    y = net.forward(data=x)["out"].copy()
    want, arg = pool_ref(x, k, 2, 0)             # numpy's argmax: the first maximum
    np.testing.assert_array_equal(y, want)
    net.blobs["out"].diff[...] = 1.0
    net.backward()
    dx = net.blobs["data"].diff
    expect = np.zeros(shape[2] * shape[3])
    for c in (0, 1):
        expect[:] = 0
        np.add.at(expect, arg[0, c].ravel(), 1.0)
        np.testing.assert_array_equal(dx[0, c].ravel(), expect)
    np.testing.assert_array_equal(dx[0, 0, ::2, ::2][:y.shape[2], :y.shape[3]], 1.0)


def test_relu_forward_and_backward(tmp_path):
    shape = (1, 3, 200, 300)                 # above the size where the loop goes parallel
    net = one_layer_net(tmp_path, shape, lambda d: L.ReLU(d))
    x = RNG.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["out"], np.maximum(x, 0))
    g = RNG.standard_normal(shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.backward()
    np.testing.assert_array_equal(net.blobs["data"].diff, g * (x > 0))


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_backward_in_place_with_a_slope_and_nan(tmp_path, slope):
    """In place, as in every net of the zoo (bottom and top share data and diff), with a
    negative slope: the gradient is g * ((x > 0) + slope * (x <= 0)), 0 at a NaN input
    (patch 0023 computes the factor by selects, vectorised)."""
    shape = (1, 3, 200, 301)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    n.scaled = L.Scale(n.data, bias_term=False, param=dict(lr_mult=0),
                       filler=dict(type="constant", value=1))
    n.relu = L.ReLU(n.scaled, in_place=True, negative_slope=slope)
    proto = n.to_proto()
    proto.force_backward = True
    (tmp_path / "net.prototxt").write_text(str(proto))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    x = RNG.standard_normal(shape).astype(np.float32)
    x.flat[::97] = 0.0
    x.flat[5::101] = np.nan
    y = net.forward(data=x)["scaled"].copy()
    fwd = np.maximum(x, 0) + np.float32(slope) * np.minimum(x, 0)
    np.testing.assert_array_equal(y, fwd)
    g = RNG.standard_normal(shape).astype(np.float32)
    net.blobs["scaled"].diff[...] = g
    net.backward()
    factor = np.where(x > 0, 1, np.where(x <= 0, np.float32(slope), 0)).astype(np.float32)
    np.testing.assert_array_equal(net.blobs["data"].diff, g * factor)


def softmax_loss_ref(x, label, ignore):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    lab = label[:, 0].astype(int)
    keep = lab != ignore
    idx = np.where(keep, lab, 0)
    picked = np.take_along_axis(p, idx[:, None], axis=1)[:, 0]
    count = keep.sum()
    loss = -np.log(np.maximum(picked, np.finfo(np.float32).tiny))[keep].sum() / count
    grad = p.copy()
    np.put_along_axis(grad, idx[:, None], np.take_along_axis(p, idx[:, None], axis=1) - 1,
                      axis=1)
    grad *= keep[:, None]
    return p, loss, grad / count


def test_softmax_with_loss_forward_and_backward(tmp_path):
    """SoftmaxWithLoss over 11 classes of two images large enough for patch 0023's
    parallel blocks (and a partial block), with ignored pixels, scores up to 80 (the
    max subtracted first): probabilities, loss and gradient against numpy in float64."""
    shape = (2, 11, 61, 700)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    n.label = L.Input(shape=dict(dim=[shape[0], 1, *shape[2:]]))
    n.prob = L.Softmax(n.data)
    n.loss = L.SoftmaxWithLoss(n.data, n.label, loss_param=dict(ignore_label=255))
    proto = n.to_proto()
    proto.force_backward = True
    (tmp_path / "net.prototxt").write_text(str(proto))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    x = (RNG.standard_normal(shape) * 20).astype(np.float32)
    x[0, 3, :5] = 80.0
    label = RNG.integers(0, 11, (shape[0], 1, *shape[2:])).astype(np.float32)
    label.flat[::7] = 255
    out = net.forward(data=x, label=label)
    p, loss, grad = softmax_loss_ref(x, label, 255)
    assert_f32_close(out["prob"], p, 11 * 4, scale=1.0)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    net.backward()
    # the data's diff sums the two layers' gradients: the loss's, and the Softmax's
    # (its top diff is zero, so none)
    assert_f32_close(net.blobs["data"].diff, grad, 11 * 4, scale=float(np.abs(grad).max()))


def test_softmax_exp_relative_accuracy(tmp_path):
    """Softmax's exp (patch 0025: a polynomial GCC vectorises instead of libm's expf)
    to a few units in the last place of float64's, relative, for every gap to the
    maximum from 0 to 87 (probabilities down to 1.6e-38); beyond 87 the probability is
    below 1.7e-38, as libm's would be (denormal or 0)."""
    gaps = np.concatenate([np.linspace(0, 87, 50000), np.linspace(87, 150, 999)])
    x = np.zeros((1, 2, 1, gaps.size), np.float32)
    x[0, 1, 0] = -gaps.astype(np.float32)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(x.shape)))
    n.prob = L.Softmax(n.data)
    (tmp_path / "net.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    prob = net.forward(data=x)["prob"][0, :, 0].astype(np.float64)
    d = -x[0, 1, 0].astype(np.float64)
    ref = np.stack([1 / (1 + np.exp(-d)), np.exp(-d) / (1 + np.exp(-d))])
    near = d < 87
    eps = np.finfo(np.float32).eps
    np.testing.assert_array_less(np.abs(prob[:, near] - ref[:, near]), 6 * eps * ref[:, near])
    assert np.all(prob[1, ~near] <= 1.7e-38) and np.all(prob[0, ~near] == 1)


def deconv_each_channel_ref(x, w, stride, pad):
    """FCN's upsampling: channel c of x spread through kernel w[c, c] (a numpy scatter)."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    oh, ow = stride * (h - 1) + k - 2 * pad, stride * (wd - 1) + k - 2 * pad
    full = np.zeros((n, c, stride * (h - 1) + k, stride * (wd - 1) + k))
    for ch in range(c):
        for ky in range(k):
            for kx in range(k):
                full[:, ch, ky:ky + stride * (h - 1) + 1:stride,
                     kx:kx + stride * (wd - 1) + 1:stride] += w[ch, ch, ky, kx] * x[:, ch]
    return full[:, :, pad:pad + oh, pad:pad + ow]


@pytest.mark.parametrize("k,stride,pad", [(15, 8, 0), (16, 8, 4), (4, 2, 1), (64, 32, 0),
                                          (3, 2, 5)])
def test_deconvolution_of_fcns_upsampling(tmp_path, k, stride, pad):
    """Fixed kernels (lr_mult 0), each channel upsampled on its own as surgery's bilinear
    weights do (patch 0023's channel-by-channel path): the output against a numpy
    scatter, the input gradient against the convolution of the output's gradient;
    one off-diagonal weight sends the layer back to BVLC's GEMM path, same answers."""
    shape = (2, 5, 9, 7)
    net = one_layer_net(tmp_path, shape, lambda d: L.Deconvolution(
        d, param=dict(lr_mult=0), convolution_param=dict(
            num_output=5, kernel_size=k, stride=stride, pad=pad, bias_term=False)))
    w = np.zeros(net.params["out"][0].data.shape)
    for c in range(5):
        w[c, c] = RNG.standard_normal((k, k))
    x = RNG.standard_normal(shape).astype(np.float32)
    g = None
    for off_diagonal in (0.0, 1e-3):
        w[0, 1, 0, 0] = off_diagonal
        net.params["out"][0].data[...] = w
        y = net.forward(data=x)["out"].copy()
        want = deconv_each_channel_ref(x.astype(np.float64), w, stride, pad)
        if off_diagonal:
            extra = np.zeros_like(want)
            full = np.zeros((shape[0], stride * (shape[2] - 1) + k,
                             stride * (shape[3] - 1) + k))
            full[:, 0:stride * (shape[2] - 1) + 1:stride,
                 0:stride * (shape[3] - 1) + 1:stride] = off_diagonal * x[:, 0]
            extra[:, 1] = full[:, pad:pad + want.shape[2], pad:pad + want.shape[3]]
            want = want + extra
        assert_f32_close(y, want, 4 * ((k + stride - 1) // stride) ** 2)
        if g is None:
            g = RNG.standard_normal(y.shape).astype(np.float32)
        net.blobs["out"].diff[...] = g
        net.backward()
        # the input gradient: the convolution of g with the same weights, (in, out) swapped
        conv_g = conv_ref(g.astype(np.float64), w, np.zeros(5), stride, pad, 1, 1)
        assert_f32_close(net.blobs["data"].diff, conv_g, 5 * k * k)


@pytest.mark.parametrize("shape,ref,axis,offset", [
    ((2, 3, 30, 40), (2, 3, 11, 13), 2, [5, 7]),
    ((3, 5, 14, 9), (2, 3, 11, 8), 0, [1, 2, 3, 1]),            # every axis offset
    ((1, 11, 375, 495), (1, 3, 360, 480), 2, [8]),              # make demo's score crop
    ((2, 6, 8), (2, 4, 5), 1, [1, 3])])                         # 3-D: the general loop
def test_crop_forward_and_backward(tmp_path, shape, ref, axis, offset):
    net = one_layer_net(tmp_path, shape, lambda d, r: L.Crop(d, r, axis=axis, offset=offset),
                        extra_inputs=[("ref", ref)])
    x = RNG.standard_normal(shape).astype(np.float32)
    y = net.forward(data=x, ref=np.zeros(ref, np.float32))["out"]
    offs = [0] * axis + (offset * (len(shape) - axis) if len(offset) == 1 else offset)
    region = tuple(slice(o, o + (r if i >= axis else s))
                   for i, (o, r, s) in enumerate(zip(offs, ref, shape)))
    np.testing.assert_array_equal(y, x[region])
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.backward()
    want = np.zeros(shape, np.float32)
    want[region] = g
    np.testing.assert_array_equal(net.blobs["data"].diff, want)


def test_concat_of_large_blobs(tmp_path):
    """A fire module's Concat at make demo's size (patch 0023 copies blobs of 2 MB and
    more in pieces on the OpenMP threads): forward and backward exact."""
    shape = (1, 128, 93, 123)
    net = one_layer_net(tmp_path, shape, lambda d, e: L.Concat(d, e),
                        extra_inputs=[("e", (1, 64, 93, 123))])
    x = RNG.standard_normal(shape).astype(np.float32)
    e = RNG.standard_normal((1, 64, 93, 123)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(data=x, e=e)["out"], np.concatenate([x, e], 1))
    g = RNG.standard_normal((1, 192, 93, 123)).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.backward()
    np.testing.assert_array_equal(net.blobs["data"].diff, g[:, :128])
    np.testing.assert_array_equal(net.blobs["e"].diff, g[:, 128:])


def test_layers_sharing_the_im2col_buffer_do_not_disturb_each_other(tmp_path):
    """Two convolutions of very different buffer sizes, run in either order, give
    what each gives alone."""
    def make(d):
        big = L.Convolution(d, kernel_size=5, pad=2, num_output=4,
                            weight_filler=dict(type="gaussian", std=1))
        return L.Convolution(big, kernel_size=3, stride=2, num_output=2,
                             weight_filler=dict(type="gaussian", std=1))
    shape = (1, 3, 40, 50)
    net = one_layer_net(tmp_path, shape, make)
    x = RNG.standard_normal(shape).astype(np.float32)
    y = net.forward(data=x)["out"]
    (w1,), (w2,) = ([p.data.astype(np.float64) for p in net.params[k][:1]]
                    for k in list(net.params))
    b1, b2 = (net.params[k][1].data.astype(np.float64) for k in list(net.params))
    mid = conv_ref(x.astype(np.float64), w1, b1, 1, 2, 1, 1)
    assert_f32_close(y, conv_ref(mid, w2, b2, 2, 0, 1, 1), (3 * 25) * (4 * 9))


def conv_weight_grad_ref(x, dy, k, stride, pad, group):
    """d(sum dy * conv(x, w)) / dw, by unfolding x."""
    n, c, h, wd = x.shape
    o, oh, ow = dy.shape[1:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cg, og = c // group, o // group
    dw = np.zeros((o, cg, k, k))
    for g in range(group):
        xs, dys = xp[:, g * cg:(g + 1) * cg], dy[:, g * og:(g + 1) * og]
        for i in range(k):
            for j in range(k):
                patch = xs[:, :, i: i + stride * (oh - 1) + 1: stride,
                           j: j + stride * (ow - 1) + 1: stride]
                dw[g * og:(g + 1) * og, :, i, j] = np.einsum("nohw,nchw->oc", dys, patch)
    return dw


@pytest.mark.parametrize("k,stride,pad,group", [(5, 1, 2, 1), (3, 2, 30, 2)])
def test_convolution_unfolded_band_by_band(tmp_path, k, stride, pad, group):
    """A convolution whose unfolded input (over 2M values) is processed in
    bands of output rows: forward, input and weight gradients as unbanded."""
    shape = (1, 16, 100, 120) if stride == 1 else (1, 32, 200, 160)
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=k, stride=stride, pad=pad, group=group, num_output=4,
        weight_filler=dict(type="gaussian", std=1), bias_filler=dict(type="gaussian", std=1)))
    oh = (shape[2] + 2 * pad - k) // stride + 1
    ow = (shape[3] + 2 * pad - k) // stride + 1
    assert shape[1] * k * k * oh * ow > 2 << 20           # more than one band
    x = RNG.standard_normal(shape).astype(np.float32)
    w, b = (p.data.astype(np.float64) for p in net.params["out"])
    y = net.forward(data=x)["out"]
    assert_f32_close(y, conv_ref(x.astype(np.float64), w, b, stride, pad, 1, group),
                     shape[1] // group * k * k)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.params["out"][0].diff[...] = 0
    net.backward()
    probe = RNG.standard_normal(shape)
    lhs = np.sum(g * conv_ref(probe, w, np.zeros_like(b), stride, pad, 1, group))
    assert np.sum(net.blobs["data"].diff.astype(np.float64) * probe) == pytest.approx(lhs, rel=1e-4)
    assert_f32_close(net.params["out"][0].diff,
                     conv_weight_grad_ref(x.astype(np.float64), g.astype(np.float64),
                                          k, stride, pad, group), oh * ow)


def test_convolution_with_more_weights_than_its_band(tmp_path):
    """Patch 0019: a convolution whose weights outnumber the 2M-value band (FCN's
    fc6) unfolds up to as many values as it has weights at once: forward, input and
    weight gradients as numpy computes them."""
    shape, k, o = (1, 64, 36, 36), 7, 1024
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=k, num_output=o,
        weight_filler=dict(type="gaussian", std=1), bias_filler=dict(type="gaussian", std=1)))
    oh = ow = shape[2] - k + 1
    assert 2 << 20 < shape[1] * k * k * oh * ow < o * shape[1] * k * k
    proto = text_format.Parse((tmp_path / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    assert memory.layer_buffers(proto, {"data": shape, "out": (1, o, oh, ow)}) \
        == {"out": shape[1] * k * k * oh * ow}               # one band, as Caffe's
    x = RNG.standard_normal(shape).astype(np.float32)
    w, b = (p.data.astype(np.float64) for p in net.params["out"])
    y = net.forward(data=x)["out"]
    assert_f32_close(y, conv_ref(x.astype(np.float64), w, b, 1, 0, 1, 1), shape[1] * k * k)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    net.params["out"][0].diff[...] = 0
    net.backward()
    probe = RNG.standard_normal(shape)
    lhs = np.sum(g * conv_ref(probe, w, np.zeros_like(b), 1, 0, 1, 1))
    assert np.sum(net.blobs["data"].diff.astype(np.float64) * probe) == pytest.approx(lhs, rel=1e-4)
    assert_f32_close(net.params["out"][0].diff,
                     conv_weight_grad_ref(x.astype(np.float64), g.astype(np.float64),
                                          k, 1, 0, 1), oh * ow)


def test_deconvolution_folded_band_by_band(tmp_path):
    """A deconvolution (FCN's upsampling) whose column buffer is folded back in
    bands of input rows: forward is the adjoint of convolution, the input
    gradient is the convolution of the output gradient."""
    shape = (1, 8, 40, 30)
    k, stride = 16, 8
    net = one_layer_net(tmp_path, shape, lambda d: L.Deconvolution(d, convolution_param=dict(
        num_output=8, kernel_size=k, stride=stride, bias_term=False,
        weight_filler=dict(type="gaussian", std=1))))
    assert 8 * k * k * shape[2] * shape[3] > 2 << 20
    x = RNG.standard_normal(shape).astype(np.float32)
    y = net.forward(data=x)["out"].astype(np.float64)
    w = net.params["out"][0].data.astype(np.float64)
    probe = RNG.standard_normal(y.shape)
    conv_probe = conv_ref(probe, w, np.zeros(8), stride, 0, 1, 1)
    assert np.sum(y * probe) == pytest.approx(np.sum(x * conv_probe), rel=1e-4)
    net.blobs["out"].diff[...] = probe
    net.backward()
    assert_f32_close(net.blobs["data"].diff, conv_probe, 8 * k * k)


ISAS = ["avx512", "avx2", "plain"]     # patch 0021's vector units, widest first


def widest_isa():
    with open("/proc/cpuinfo") as f:
        flags = set(next((l for l in f if l.startswith("flags")), "").split())
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "fma"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "plain"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape,pad,num_output,bias", [
    ((2, 16, 29, 33), 1, 24, True),      # odd output: the last tiles are cut
    ((1, 32, 38, 36), 0, 16, True),      # no padding, output 36x34: a cut tile column
    ((1, 16, 31, 29), 2, 16, False),     # wider padding, no bias
    ((1, 16, 7, 6), 100, 20, True),      # FCN's 100 px: most tiles read only padding
    ((1, 20, 31, 29), 1, 33, True),      # channel counts that fill no vector
    ((1, 16, 400, 210), 1, 16, True),    # several bands of tile rows
])
def test_winograd_convolution(tmp_path, monkeypatch, shape, pad, num_output, bias, isa):
    """3x3 stride-1 convolutions of 16 or more input channels run Winograd's
    F(4x4, 3x3) forward (patches 0010, 0021), for padding up to 2 their input's
    gradient too, and their weights' gradient by F(3x3, 4x4) (patch 0024, added to
    the gradient already there, as Caffe accumulates): the same as the numpy
    reference and as BVLC's im2col path (CAFFE_WINOGRAD=0) up to float rounding,
    which differs. Each vector unit the CPU has (CAFFE_CPU_ISA forces the narrower
    ones) computes it."""
    monkeypatch.setenv("CAFFE_CPU_ISA", isa)
    ran = isa if ISAS.index(isa) >= ISAS.index(widest_isa()) else widest_isa()
    assert caffe.cpu_isa() == ran
    if ran != isa:
        pytest.skip(f"this CPU has no {isa}; {ran} is tested")
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=3, pad=pad, num_output=num_output, bias_term=bias,
        weight_filler=dict(type="gaussian", std=1), bias_filler=dict(type="gaussian", std=1)))
    x = RNG.standard_normal(shape).astype(np.float32)
    w = net.params["out"][0].data.astype(np.float64)
    b = net.params["out"][1].data.astype(np.float64) if bias else np.zeros(num_output)
    if shape[2] > 100:                    # tiles of 4x4 outputs, the output being (H + 2 pad - 2)
        tiles_h, tiles_w = (-(-(n + 2 * pad - 2) // memory.WINOGRAD_TILE) for n in shape[2:])
        row = memory.WINOGRAD_PRODUCTS * (shape[1] + num_output) * tiles_w
        assert row * tiles_h > memory.WINOGRAD_BAND_ELEMENTS   # over one band
    y = net.forward(data=x)["out"].copy()
    want = conv_ref(x.astype(np.float64), w, b, 1, pad, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    probe = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = probe
    before = RNG.standard_normal(w.shape).astype(np.float32)
    net.params["out"][0].diff[...] = before
    net.backward()
    dx = net.blobs["data"].diff.copy()
    dw = net.params["out"][0].diff - before
    want_dw = conv_weight_grad_ref(x.astype(np.float64), probe.astype(np.float64), 3, 1, pad, 1)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-4 * np.abs(want_dw).max())
    if pad <= 2:   # d/dx sum(probe * conv(x, w)) = conv(probe, w turned, channels swapped, 2 - pad)
        turned = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        want_dx = conv_ref(probe.astype(np.float64), turned, np.zeros(shape[1]), 1, 2 - pad, 1, 1)
        np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-4 * np.abs(want_dx).max())
    monkeypatch.setenv("CAFFE_WINOGRAD", "0")
    net.reshape()
    y_im2col = net.forward(data=x)["out"].copy()
    np.testing.assert_allclose(y, y_im2col, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert not np.array_equal(y, y_im2col)   # the two paths did run
    net.blobs["out"].diff[...] = probe
    net.params["out"][0].diff[...] = before
    net.backward()
    dx_im2col = net.blobs["data"].diff
    np.testing.assert_allclose(dx, dx_im2col, rtol=1e-4, atol=1e-5 * np.abs(dx_im2col).max())
    assert (pad <= 2) != np.array_equal(dx, dx_im2col)   # Winograd's where it applies
    dw_im2col = net.params["out"][0].diff - before
    np.testing.assert_allclose(dw, dw_im2col, rtol=1e-4, atol=1e-5 * np.abs(dw_im2col).max())
    assert not np.array_equal(dw, dw_im2col)


def test_a_training_step_of_vgg16_keeps_bvlc_gradients(tmp_path, monkeypatch):
    """The backward pass of FCN-32s (VGG-16, the committed prototxt) on a small image:
    every parameter's gradient and the input's, with patch 0021's Winograd passes,
    within 1e-4 (relative to its largest value) of BVLC's im2col + GEMM arithmetic
    (CAFFE_WINOGRAD=0). Both from the same forward pass: forwards that differ by
    rounding may pick another maximum of a pooling window or sign of a ReLU input
    near zero, and the gradients then differ for that reason alone."""
    from fcn.timing import image_input, random_weights
    proto = caffe_pb2.NetParameter()
    text_format.Merge((REPO / "voc-fcn32s/deploy.prototxt").read_text(), proto)
    proto.force_backward = True
    (tmp_path / "net.prototxt").write_text(str(proto))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    random_weights(net)
    x = image_input(40, 36)
    net.blobs["data"].reshape(*x.shape)
    grads = {}
    monkeypatch.setenv("CAFFE_WINOGRAD", "0")
    net.reshape()
    score = net.forward(data=x)["score"]
    for flag in ("1", "0"):
        monkeypatch.setenv("CAFFE_WINOGRAD", flag)
        net.reshape()                     # same shapes: every blob keeps its values
        net.blobs["score"].diff[...] = np.random.default_rng(1).standard_normal(score.shape)
        for ps in net.params.values():
            for p in ps:
                p.diff[...] = 0
        net.backward()
        grads[flag] = {f"{k}/{i}": p.diff.copy() for k, ps in net.params.items()
                       for i, p in enumerate(ps)}
        grads[flag]["data"] = net.blobs["data"].diff.copy()
    for k, want in grads["0"].items():
        got = grads["1"][k]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max(), err_msg=k)
    assert not np.array_equal(grads["1"]["data"], grads["0"]["data"])   # Winograd ran


def test_winograd_layers_sharing_their_buffer_and_training(tmp_path):
    """Winograd layers of different sizes share one buffer, in either order, forward
    and backward (the weights' gradient sums its products there, then the input's
    gradient puts its filters there): the gradients of the forward's convolutions."""
    def make(d):
        big = L.Convolution(d, kernel_size=3, pad=1, num_output=48,
                            weight_filler=dict(type="gaussian", std=0.1))
        return L.Convolution(big, kernel_size=3, num_output=16,
                             weight_filler=dict(type="gaussian", std=0.1))
    shape = (2, 16, 38, 34)              # 90 and 72 tiles: both Winograd's
    net = one_layer_net(tmp_path, shape, make)
    names = list(net.params)
    x = RNG.standard_normal(shape).astype(np.float32)
    (w1, b1), (w2, b2) = ([p.data.astype(np.float64) for p in net.params[k]] for k in names)
    mid = conv_ref(x.astype(np.float64), w1, b1, 1, 1, 1, 1)
    y = net.forward(data=x)["out"]
    assert_f32_close(y, conv_ref(mid, w2, b2, 1, 0, 1, 1), (16 * 9) * (48 * 9))
    g = RNG.standard_normal(y.shape).astype(np.float32)
    net.blobs["out"].diff[...] = g
    for k in names:
        net.params[k][0].diff[...] = 0
    net.backward()
    assert_f32_close(net.params[names[1]][0].diff,
                     conv_weight_grad_ref(mid, g.astype(np.float64), 3, 1, 0, 1),
                     shape[0] * y.shape[2] * y.shape[3])
    turned = w2[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    dmid = conv_ref(g.astype(np.float64), turned, np.zeros(48), 1, 2, 1, 1)
    assert_f32_close(net.params[names[0]][0].diff,
                     conv_weight_grad_ref(x.astype(np.float64), dmid, 3, 1, 1, 1),
                     shape[0] * shape[2] * shape[3] * 16 * 9)


def test_winograd_leaves_layers_of_few_tiles_to_im2col(tmp_path, monkeypatch):
    """Under 64 tiles of 4x4 outputs (SqueezeNet's fire9 at 23x30 has 48) a 3x3
    convolution keeps BVLC's im2col + GEMM in every pass (patch 0024): the same
    values, to the bit, as with CAFFE_WINOGRAD=0. (No bias: patch 0026 adds it
    before the products unless CAFFE_WINOGRAD=0, which rounds differently.)"""
    shape = (1, 64, 23, 30)
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=3, pad=1, num_output=32, weight_filler=dict(type="gaussian", std=1),
        bias_term=False))
    x = RNG.standard_normal(shape).astype(np.float32)
    probe = RNG.standard_normal((1, 32, 23, 30)).astype(np.float32)
    runs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("CAFFE_WINOGRAD", flag)
        net.reshape()
        y = net.forward(data=x)["out"].copy()
        net.blobs["out"].diff[...] = probe
        net.params["out"][0].diff[...] = 0
        net.backward()
        runs.append((y, net.blobs["data"].diff.copy(), net.params["out"][0].diff.copy()))
    for got, want in zip(*runs):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k,stride,shape", [
    (7, 2, (1, 3, 300, 300)),       # make demo's conv1, in two bands of output rows
    (1, 1, (1, 600, 9, 11)),        # a 1x1 convolution over more channels than a GEMM block
    (3, 1, (1, 64, 23, 30))])       # a 3x3 of few tiles (im2col, patch 0024)
def test_convolution_bias_first_and_bvlc_order(tmp_path, monkeypatch, k, stride, shape):
    """Patch 0026: an im2col or 1x1 convolution starts its output as the bias and adds
    the products to it, as numpy computes it; with CAFFE_WINOGRAD=0 it keeps BVLC's
    order (products, then the bias added by a GEMM of depth 1), what the port
    reference outputs are computed with: to the bit, the bias-free output plus the
    bias in float32."""
    net = one_layer_net(tmp_path, shape, lambda d: L.Convolution(
        d, kernel_size=k, stride=stride, num_output=16,
        weight_filler=dict(type="gaussian", std=1), bias_filler=dict(type="gaussian", std=30)))
    x = RNG.standard_normal(shape).astype(np.float32)
    w, b = (p.data.copy() for p in net.params["out"])
    want = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                    stride, 0, 1, 1)
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("CAFFE_WINOGRAD", flag)
        net.reshape()
        net.params["out"][1].data[...] = b
        runs[flag] = net.forward(data=x)["out"].copy()
        assert_f32_close(runs[flag], want, shape[1] * k * k + 1,
                         scale=float(np.abs(want).max() + np.abs(b).max()))
        net.params["out"][1].data[...] = 0
        runs[flag + " bias-free"] = net.forward(data=x)["out"].copy()
    np.testing.assert_array_equal(runs["0"], runs["0 bias-free"] + b[None, :, None, None])
    np.testing.assert_array_equal(runs["1 bias-free"], runs["0 bias-free"])

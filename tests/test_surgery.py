"""surgery.py: convolutionalization (the paper's Fig. 2), bilinear upsampling,
score expansion, and the classifier -> FCN initialisation command."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P

from fcn import builder, caffemodel, surgery, zoo
from conftest import REPO, assert_f32_close, fill_random

caffe.set_mode_cpu()


def build(tmp_path, n, name):
    path = tmp_path / f"{name}.prototxt"
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TEST)


def small_vgg(fully_conv, hw):
    """VGG-shaped (conv-relu blocks, max pools, fc6/fc7/fc8), unpadded convolutions so
    that every output sees exactly one crop of the input."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, *hw]))
    n.conv1_1 = L.Convolution(n.data, kernel_size=3, num_output=8)
    n.relu1_1 = L.ReLU(n.conv1_1, in_place=True)
    n.conv1_2 = L.Convolution(n.relu1_1, kernel_size=3, num_output=8)
    n.relu1_2 = L.ReLU(n.conv1_2, in_place=True)
    n.pool1 = L.Pooling(n.relu1_2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2_1 = L.Convolution(n.pool1, kernel_size=3, num_output=16)
    n.relu2_1 = L.ReLU(n.conv2_1, in_place=True)
    n.pool2 = L.Pooling(n.relu2_1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    if fully_conv:
        n.fc6 = L.Convolution(n.pool2, kernel_size=6, num_output=32)
        n.relu6 = L.ReLU(n.fc6, in_place=True)
        n.fc7 = L.Convolution(n.relu6, kernel_size=1, num_output=32)
        n.relu7 = L.ReLU(n.fc7, in_place=True)
        n.fc8 = L.Convolution(n.relu7, kernel_size=1, num_output=10)
    else:
        n.fc6 = L.InnerProduct(n.pool2, num_output=32)
        n.relu6 = L.ReLU(n.fc6, in_place=True)
        n.fc7 = L.InnerProduct(n.relu6, num_output=32)
        n.relu7 = L.ReLU(n.fc7, in_place=True)
        n.fc8 = L.InnerProduct(n.relu7, num_output=10)
    return n


def test_convolutionalized_classifier_is_the_classifier_everywhere(tmp_path):
    clf = build(tmp_path, small_vgg(False, (32, 32)), "clf")
    rng = np.random.default_rng(0)
    for params in clf.params.values():
        for p in params:
            p.data[...] = rng.standard_normal(p.data.shape).astype(np.float32) * 0.2
    fcn = build(tmp_path, small_vgg(True, (32, 32)), "fcn")
    summary = surgery.transplant(fcn, clf, verbose=False)
    assert summary["copied"] == ["conv1_1", "conv1_2", "conv2_1"]
    assert summary["coerced"] == ["fc6", "fc7", "fc8"] and summary["dropped"] == []

    # a classifier-sized input: the same 10 scores
    x = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    want = clf.forward(data=x)["fc8"][0]
    got = fcn.forward(data=x)["fc8"][0, :, 0, 0]
    # InnerProduct and Convolution sum in different orders: up to float32 rounding of
    # the longest sums on the way (fc6: 16 x 6 x 6 terms, conv1_2: 8 x 3 x 3, ...)
    terms = 16 * 6 * 6 + 8 * 9 + 8 * 9 + 3 * 9 + 32 + 32
    assert_f32_close(got, want, terms)
    assert np.abs(want).max() > 1e-3

    # a larger input: a score map, each position the classifier on its crop (stride 4)
    big = rng.uniform(-1, 1, (1, 3, 48, 40)).astype(np.float32)
    fcn.blobs["data"].reshape(*big.shape)
    fcn.reshape()
    smap = fcn.forward(data=big)["fc8"][0]
    assert smap.shape == (10, 5, 3)
    for i in range(smap.shape[1]):
        for j in range(smap.shape[2]):
            crop = big[:, :, 4 * i:4 * i + 32, 4 * j:4 * j + 32]
            assert_f32_close(smap[:, i, j], clf.forward(data=crop)["fc8"][0], terms)


def test_vgg16_classifier_into_the_fcn_backbone(tmp_path):
    c = zoo.CLASSIFIERS["vgg16"]
    clf = caffe.Net(str(c.dir / c.proto), caffe.TEST)
    fill_random(clf)
    fcn = caffemodel.load_net(builder.fcn_backbone("vgg16"))
    s = surgery.transplant(fcn, clf, verbose=False)
    assert s["copied"] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
                           "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2",
                           "conv5_3"]
    assert s["coerced"] == ["fc6", "fc7"] and s["dropped"] == ["fc8"] and s["kept"] == []
    np.testing.assert_array_equal(fcn.params["fc6"][0].data.reshape(4096, -1),
                                  clf.params["fc6"][0].data)
    np.testing.assert_array_equal(fcn.params["conv3_2"][1].data, clf.params["conv3_2"][1].data)


def test_transplant_refuses_what_cannot_be_coerced(tmp_path):
    a = build(tmp_path, small_vgg(False, (32, 32)), "a")
    b = build(tmp_path, small_vgg(False, (36, 36)), "b")      # fc6 sees 7x7, not 6x6
    with pytest.raises(surgery.SurgeryError, match=r"cannot coerce fc6\[0\] \[32, 576\]"):
        surgery.transplant(b, a, verbose=False)


def deconv_net(tmp_path, channels, factor, hw, kernel=None, c_out=None):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, channels, *hw]))
    n.up = L.Deconvolution(n.data, convolution_param=dict(
        num_output=c_out or channels, kernel_size=kernel or 2 * factor, stride=factor,
        bias_term=False))
    return build(tmp_path, n, f"deconv{factor}")


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_deconvolution_is_bilinear_interpolation(tmp_path, factor):
    h, w = 6, 5
    net = deconv_net(tmp_path, 3, factor, (h, w))
    assert surgery.interp(net) == ["up"]
    x = np.random.default_rng(factor).uniform(-5, 5, (1, 3, h, w)).astype(np.float32)
    y = net.forward(data=x)["up"][0]
    assert y.shape == (3, (h + 1) * factor, (w + 1) * factor)
    # output o sits at input coordinate (o - (factor - 1/2)) / factor; between the first
    # and last input rows/columns that is plain bilinear interpolation
    center = factor - 0.5
    oy = np.arange(y.shape[1])
    ox = np.arange(y.shape[2])
    iy, ix = (oy - center) / factor, (ox - center) / factor
    inside_y = (iy >= 0) & (iy <= h - 1)
    inside_x = (ix >= 0) & (ix <= w - 1)
    for c in range(3):
        rows = np.stack([np.interp(iy[inside_y], np.arange(h), x[0, c, :, j]) for j in range(w)], 1)
        want = np.stack([np.interp(ix[inside_x], np.arange(w), r) for r in rows])
        # each output sums 3 channels x up to 4 kernel taps in float32
        assert_f32_close(y[c][np.ix_(inside_y, inside_x)], want, 16, scale=np.abs(x).max())


def test_interp_rejects_what_is_not_per_channel_bilinear(tmp_path):
    with pytest.raises(surgery.SurgeryError, match="3 inputs and 4 outputs"):
        surgery.interp(deconv_net(tmp_path, 3, 2, (4, 4), c_out=4))
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.up = L.Deconvolution(n.data, convolution_param=dict(
        num_output=2, kernel_h=4, kernel_w=2, stride=2, bias_term=False))
    with pytest.raises(surgery.SurgeryError, match="must be square"):
        surgery.interp(build(tmp_path, n, "rect"))


def test_upsample_filt_values():
    np.testing.assert_allclose(surgery.upsample_filt(4)[1], [0.1875, 0.5625, 0.5625, 0.1875])
    np.testing.assert_allclose(surgery.upsample_filt(3)[1], [0.5, 1.0, 0.5])


def score_layer_net(tmp_path, classes, name):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 8, 3, 3]))
    n.score = L.Convolution(n.data, kernel_size=1, num_output=classes)
    return build(tmp_path, n, name)


def test_expand_score(tmp_path):
    old, new = score_layer_net(tmp_path, 21, "old"), score_layer_net(tmp_path, 60, "new")
    fill_random(old)
    new.params["score"][0].data[...] = 7
    assert surgery.expand_score(new, "score", old, "score") == 21
    np.testing.assert_array_equal(new.params["score"][0].data[:21], old.params["score"][0].data)
    np.testing.assert_array_equal(new.params["score"][1].data[:21], old.params["score"][1].data)
    assert (new.params["score"][0].data[21:] == 7).all()
    with pytest.raises(surgery.SurgeryError, match="more than"):
        surgery.expand_score(old, "score", new, "score")


def test_surgery_command_makes_the_caffenet_fcn_init(tmp_path):
    c = zoo.CLASSIFIERS["caffenet"]
    clf = caffe.Net(str(c.dir / c.proto), caffe.TEST)
    fill_random(clf, seed=9)
    clf.save(str(tmp_path / "caffenet.caffemodel"))
    env = {**os.environ, "GLOG_minloglevel": "2"}
    r = subprocess.run([sys.executable, str(REPO / "surgery.py"), "caffenet", "--weights",
                        str(tmp_path / "caffenet.caffemodel"), "--out", str(tmp_path / "init.caffemodel")],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "coerced 2 (fc6, fc7); dropped 1 (fc8)" in r.stdout
    fcn = caffe.Net(str(REPO / "voc-fcn-alexnet/deploy.prototxt"), caffe.TEST)
    assert "fc6" in caffemodel.check_fits(tmp_path / "init.caffemodel", fcn)[0]
    fcn.copy_from(str(tmp_path / "init.caffemodel"))
    np.testing.assert_array_equal(fcn.params["fc6"][0].data.reshape(4096, -1),
                                  clf.params["fc6"][0].data)

    r = subprocess.run([sys.executable, str(REPO / "surgery.py"), "vgg16", "--weights",
                        str(tmp_path / "none.caffemodel")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "none.caffemodel" in r.stderr and "'python prepare.py get weights vgg16'" in r.stderr

    for out, says in [(tmp_path, "is a folder"), (tmp_path / "caffenet.caffemodel/x",
                                                  "is a file, not a folder")]:
        r = subprocess.run([sys.executable, str(REPO / "surgery.py"), "caffenet", "--weights",
                            str(tmp_path / "caffenet.caffemodel"), "--out", str(out)],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr

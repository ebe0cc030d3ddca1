"""The CPU-scale method: the compressed SqueezeNet decoded and checked on real
photos, transplanted into the CamVid FCNs, and fine-tuned on real CamVid images."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

import surgery
from fcn import squeezenet, zoo
from fcn.initial import make_fcn_init
from conftest import REPO

caffe.set_mode_cpu()


@pytest.fixture(scope="module")
def sq_dir(shared_data):
    return shared_data / "squeezenet"


@pytest.fixture(scope="module")
def classifier_net(sq_dir):
    return caffe.Net(str(sq_dir / squeezenet.PROTOTXT), caffe.TEST)


@pytest.fixture(scope="module")
def decoded(squeezenet_decoded):
    return squeezenet_decoded


def test_byte_accounting_is_exact(sq_dir, classifier_net):
    data = (sq_dir / squeezenet.COMPRESSED).read_bytes()
    layers = squeezenet.net_layers(classifier_net)
    assert len(layers) == 26
    nnz = np.frombuffer(data, np.uint32, 26).astype(np.int64)
    assert squeezenet.layout([(n, int(np.prod(s)), b) for n, s, b in layers])(nnz) == len(data)
    params = squeezenet.decode(data, layers)
    for name, shape, n_bias in layers:
        w, b = params[name]
        assert w.shape == shape and b.shape == (n_bias,)
    assert sum(int((w != 0).sum()) for w, _ in params.values()) <= int(nnz.sum())

    with pytest.raises(squeezenet.CompressedError, match=f"has {len(data) - 1000} bytes, its "
                       f"layers need {len(data)}: truncated"):
        squeezenet.decode(data[:-1000], layers)
    with pytest.raises(squeezenet.CompressedError, match="extra bytes"):
        squeezenet.decode(data + b"\0", layers)


def test_builder_classifier_is_the_released_net(classifier_net):
    c = zoo.CLASSIFIERS["squeezenet"]
    ours = caffe.Net(str(c.dir / c.proto), caffe.TEST)
    assert [(k, [p.data.shape for p in v]) for k, v in ours.params.items()] == \
        [(k, [p.data.shape for p in v]) for k, v in classifier_net.params.items()]


def test_decoded_net_classifies_the_photos(decoded, shared_data):
    weights, nnz, total = decoded
    assert 0 < nnz < total
    photos = shared_data / "photos"
    names = (photos / "imagenet_labels.txt").read_text().splitlines()[1:]
    want = {"grace_hopper.bmp": {"bow tie, bow-tie, bowtie", "suit, suit of clothes"},
            "cat.bmp": {"Egyptian cat", "tabby, tabby cat"},
            "bird.bmp": {"chickadee"}}
    results = squeezenet.classify(weights, [photos / f for f in want])
    for path, best in results:
        assert names[best[0][0]] in want[path.name], (path.name, [names[i] for i, _ in best])


def test_surgery_keeps_every_conv_layer(decoded):
    weights, _, _ = decoded
    c = zoo.CLASSIFIERS["squeezenet"]
    clf = caffe.Net(str(c.dir / c.proto), str(weights), caffe.TEST)
    for name in ("camvid-fcn16s-squeezenet", "camvid-fcn8s-squeezenet"):
        fcn = caffe.Net(str(REPO / name / "deploy.prototxt"), caffe.TEST)
        s = surgery.transplant(fcn, clf, verbose=False)
        assert len(s["copied"]) == 25 and s["dropped"] == ["conv_final"]
        for layer in s["copied"]:
            for a, b in zip(fcn.params[layer], clf.params[layer]):
                np.testing.assert_array_equal(a.data, b.data)
        assert all(k.startswith(("score", "upscore", "scale")) for k in s["kept"])


def test_sgd_on_two_camvid_images_lowers_the_loss(decoded, shared_data, tmp_path,
                                                  monkeypatch):
    camvid = shared_data / "camvid"
    two = tmp_path / "camvid"
    for sub in ("train", "trainannot"):
        (two / sub).mkdir(parents=True)
    lines = (camvid / "train.txt").read_text().splitlines()[:2]
    for line in lines:
        name = os.path.basename(line.split()[0])
        for sub in ("train", "trainannot"):
            (two / sub / name).symlink_to(camvid / sub / name)
    (two / "train.txt").write_text("\n".join(lines) + "\n")
    (two / "val.txt").write_text("\n".join(lines) + "\n")
    (two / "val").symlink_to(two / "train")
    (two / "valannot").symlink_to(two / "trainannot")

    weights, _, _ = decoded
    init = tmp_path / "init.caffemodel"
    make_fcn_init("squeezenet", weights=weights, out=init)
    r = subprocess.run([sys.executable, str(REPO / "camvid-fcn8s-squeezenet/solve.py"),
                        "--weights", str(init), "--iters", "12", "--test-interval", "12",
                        "--display", "1", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stderr
    import json
    losses = [json.loads(l)["loss"] for l in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0], losses
    assert "initialised 25 layers" in r.stdout


def test_missing_compressed_file_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "prepare.py"), "get", "weights", "squeezenet",
                        "--data-root", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"compressed_SqueezeNet.net not found in {tmp_path / 'squeezenet'}" in r.stderr
    assert not (REPO / "ilsvrc-nets/squeezenet_v1.0.caffemodel.part").exists()

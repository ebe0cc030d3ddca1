"""reference.py onnx and kit: the command's file (metadata, replacing only its own
files) and its one-line refusals; a layer ONNX cannot express; the kit's standalone
checker on a port (onnxruntime on the kit's ONNX file) that agrees, and on one with
a planted difference in one layer, which it names. (Every model's export against
Caffe: tests/test_zoo.py.)"""
import ast
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import caffe
from caffe import layers as L
from caffe.proto import caffe_pb2

from conftest import REPO
from fcn import caffemodel, onnx_export

caffe.set_mode_cpu()


def run(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "reference.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_a_layer_onnx_cannot_express_is_one_line():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3)
    n.prob = L.Softmax(n.conv)
    proto = n.to_proto()
    net = caffemodel.load_net(proto)
    with pytest.raises(onnx_export.ExportError,
                       match="layer 'prob' of type Softmax: no ONNX export"):
        onnx_export.export(proto, net, ["prob"])


def test_onnx_command_writes_a_checked_file_and_refuses_mistakes(alexnet_weights, tmp_path):
    r = run("onnx", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "a.onnx",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "onnx.checker passed" in r.stdout and (tmp_path / "a.onnx").is_file()
    m = onnx.load(str(tmp_path / "a.onnx"))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["model"] == "voc-fcn-alexnet" and json.loads(meta["classes"])["score"][15] == \
        "person"
    r = run("onnx", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "a.onnx",
            cwd=tmp_path)                                            # its own file: replaced
    assert r.returncode == 0, r.stderr
    (tmp_path / "mine.onnx").write_bytes(b"someone else's model")
    for args, says in [(["--out", "mine.onnx"], "was not written by"),
                       (["--out", tmp_path], "is a folder"),
                       (["--weights", "nope.caffemodel", "--out", "b.onnx"], "not found")]:
        if "--weights" not in args:
            args = ["--weights", alexnet_weights, *args]
        r = run("onnx", "voc-fcn-alexnet", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert (tmp_path / "mine.onnx").read_bytes() == b"someone else's model"


def test_the_kit_checks_a_port_and_names_the_layer_that_diverges(alexnet_weights, shared_data,
                                                                 tmp_path):
    r = run("kit", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "kit",
            "--image", shared_data / "voc-demo/image.jpg", "--image",
            shared_data / "photos/cat.bmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kit = tmp_path / "kit"
    assert sorted(p.name for p in kit.iterdir() if not p.name.startswith(".")) == [
        "README.md", "check.py", "classes.json", "images", "reference", "voc-fcn-alexnet.onnx"]
    info = json.loads((kit / "classes.json").read_text())
    assert len(info["outputs"]["score"]) == 21 and info["palette"][15] == [192, 128, 128]

    # The checker is standalone: numpy and the standard library only.
    tree = ast.parse((kit / "check.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"numpy"}

    # A port: onnxruntime on the kit's ONNX file, every value named after its blob.
    m = onnx.load(str(kit / "voc-fcn-alexnet.onnx"))
    ref = np.load(kit / "reference/image.npz")
    blobs = [k[5:] for k in ref.files if k.startswith("blob/") and "_split_" not in k
             and k[5:] != "data"]
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(b) for b in blobs
                          if b not in have)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    port = dict(zip(names, sess.run(names, {"data": ref["input/data"]})))
    np.savez(tmp_path / "port.npz", **port)

    def check(*args):
        return subprocess.run([sys.executable, str(kit / "check.py"), *map(str, args)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
    c = check(kit / "reference/image.npz", tmp_path / "port.npz")
    assert c.returncode == 0, c.stdout + c.stderr
    assert f"{len(blobs)} of {len(blobs)} blobs agree" in c.stdout
    assert "argmax agrees on" in c.stdout

    port["pool2"] = port["pool2"] * np.float32(1.01)          # planted: one layer off by 1%
    np.savez(tmp_path / "bad.npz", **port)
    c = check(kit / "reference/image.npz", tmp_path / "bad.npz")
    assert c.returncode == 1, c.stdout + c.stderr
    assert "first divergence: blob pool2, written by pool2 (Pooling)" in c.stdout

    c = check(kit / "reference/image.npz", tmp_path / "nope.npz")
    assert c.returncode == 2 and c.stderr.count("\n") == 1 and "not found" in c.stderr
    np.savez(tmp_path / "other.npz", something=np.ones(3))
    c = check(kit / "reference/image.npz", tmp_path / "other.npz")
    assert c.returncode == 2 and "holds none of the reference's blobs" in c.stderr


def test_kit_refuses_a_folder_of_the_users(alexnet_weights, shared_data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("mine")
    r = run("kit", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "mine",
            "--image", shared_data / "photos/cat.bmp", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds files this project did not write" in r.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def checker_run(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "fcn/checker.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


LAYERS = [{"name": "data", "type": "Input", "bottom": [], "top": ["data"]},
          {"name": "conv", "type": "Convolution", "bottom": ["data"], "top": ["conv"]},
          {"name": "score", "type": "Convolution", "bottom": ["conv"], "top": ["score"]}]


def small_reference(path, meta):
    """A reference archive as reference.py export lays it out: data -> conv -> score,
    with ``meta`` (a string) as its meta."""
    rng = np.random.default_rng(0)
    blobs = {b: rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
             for b in ("data", "conv", "score")}
    np.savez(path, meta=np.array(meta), **{"input/data": blobs["data"]},
             **{f"blob/{b}": v for b, v in blobs.items()})
    return blobs


@pytest.mark.parametrize("meta", [
    '5', '"5"', '[1, 2]', 'not json {', '{"layers": 5}', '{"layers": [5]}',
    json.dumps({"layers": [{"name": "conv", "type": "Convolution", "bottom": ["data"]}]}),
    json.dumps({"layers": [{"name": "conv", "type": "Convolution", "top": "conv"}]}),
    json.dumps({"layers": LAYERS, "outputs": 5}),
])
def test_check_py_refuses_a_reference_with_a_malformed_meta_in_one_line(meta, tmp_path):
    """A meta that is not the layer list of reference.py export (a number, a layer
    without its tops) was a traceback and exit 1, which says "the port diverges"."""
    blobs = small_reference(tmp_path / "ref.npz", meta)
    np.savez(tmp_path / "port.npz", score=blobs["score"])
    c = checker_run(tmp_path / "ref.npz", tmp_path / "port.npz", cwd=tmp_path)
    assert c.returncode == 2 and c.stderr.count("\n") == 1, c.stdout + c.stderr
    assert "ref.npz" in c.stderr and "Traceback" not in c.stderr and not c.stdout


def test_check_py_names_blobs_not_compared_and_needs_the_outputs(tmp_path):
    """A port holding score and a misspelt sc0re got "1 of 1 blobs agree", saying nothing
    of sc0re nor of the reference's blobs it lacks; a port without the net's output
    passed on the blobs it had."""
    blobs = small_reference(tmp_path / "ref.npz", json.dumps({"layers": LAYERS,
                                                              "outputs": ["score"]}))
    np.savez(tmp_path / "port.npz", score=blobs["score"], sc0re=blobs["conv"])
    c = checker_run(tmp_path / "ref.npz", tmp_path / "port.npz", cwd=tmp_path)
    assert c.returncode == 0, c.stdout + c.stderr
    assert "1 of 1 blobs agree" in c.stdout
    assert "not in the port (2 of the reference's 3): data, conv" in c.stdout
    assert "not in the reference (1): sc0re" in c.stdout

    np.savez(tmp_path / "port.npz", conv=blobs["conv"], sc0re=blobs["score"])
    c = checker_run(tmp_path / "ref.npz", tmp_path / "port.npz", cwd=tmp_path)
    assert c.returncode == 2 and c.stderr.count("\n") == 1, c.stdout + c.stderr
    assert "port.npz lacks the net's output score" in c.stderr and "sc0re" in c.stderr
    assert not c.stdout


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_onnx_and_kit_refuse_weights_that_are_not_finite(bad, alexnet_weights, shared_data,
                                                         tmp_path):
    """Weights with a NaN were exported: every reference blob was NaN, and a correct
    port was reported as diverging at conv1. Refused in one line, as every load of
    weights refuses them (fcn/caffemodel.py)."""
    net = caffe_pb2.NetParameter()
    net.ParseFromString(alexnet_weights.read_bytes())
    layer = next(l for l in net.layer if l.name == "conv2")
    layer.blobs[0].data[7] = bad
    w = tmp_path / "w.caffemodel"
    w.write_bytes(net.SerializeToString())
    r = run("onnx", "voc-fcn-alexnet", "--weights", w, "--out", "a.onnx", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "conv2" in r.stderr and "not finite" in r.stderr and str(w) in r.stderr
    assert not (tmp_path / "a.onnx").exists()
    r = run("kit", "voc-fcn-alexnet", "--weights", w, "--out", "kit", "--image",
            shared_data / "photos/cat.bmp", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "conv2" in r.stderr and "not finite" in r.stderr
    assert not list((tmp_path / "kit").glob("*.onnx")) and \
        not list((tmp_path / "kit").glob("reference/*"))

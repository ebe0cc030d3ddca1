"""reference.py onnx and kit: the command's file (metadata, replacing only its own
files) and its one-line refusals; a layer ONNX cannot express; the fixed-size export
(--size) that OpenCV 4.x reads; the kit's standalone checker on a port (onnxruntime
on the kit's ONNX file) that agrees, and on one with a planted difference in one
layer, which it names. (Every model's export against Caffe, fed by its metadata's
recipe, and its fixed-size export in OpenCV: tests/test_zoo.py.)"""
import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import caffe
from caffe import layers as L
from caffe.proto import caffe_pb2

from conftest import REPO, fill_random
from fcn import caffemodel, files, images, onnx_export, visual, zoo
from fcn.datasets import DATASETS
from fcn.surgery import interp

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
    recipe = json.loads(meta["preprocessing"])["data"]
    assert recipe["kind"] == "color" and recipe["channels"] == [2, 1, 0]
    assert recipe["mean"] == list(DATASETS["voc"].mean) and recipe["log_min"] is None
    assert meta["input_size"] == "any"
    assert [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] \
        == ["N", 3, "H", "W"]
    r = run("onnx", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "a.onnx",
            cwd=tmp_path)                                            # its own file: replaced
    assert r.returncode == 0, r.stderr
    (tmp_path / "mine.onnx").write_bytes(b"someone else's model")
    for args, says in [(["--out", "mine.onnx"], "was not written by"),
                       (["--out", tmp_path], "is a folder"),
                       (["--size", "64", "--out", "b.onnx"], "--size must be HxW"),
                       (["--size", "0x64", "--out", "b.onnx"], "--size must be HxW"),
                       (["--size", "64x-8", "--out", "b.onnx"], "--size must be HxW"),
                       (["--weights", "nope.caffemodel", "--out", "b.onnx"], "not found")]:
        if "--weights" not in args:
            args = ["--weights", alexnet_weights, *args]
        r = run("onnx", "voc-fcn-alexnet", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert (tmp_path / "mine.onnx").read_bytes() == b"someone else's model"


def caffe_scores(weights, x):
    net = caffemodel.load_net(REPO / "voc-fcn-alexnet/deploy.prototxt", weights)
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    return net.forward(data=x)["score"].copy()


def assert_scores_agree(got, want):
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    assert got.shape == want.shape and err <= 1e-4 and agree >= 0.999, (err, agree)


def test_onnx_size_writes_a_fixed_size_export_that_opencv_4_reads(alexnet_weights,
                                                                  shared_data, tmp_path):
    """OpenCV 4.x (the last line with a Caffe importer) refused every export: free N, H
    and W (parseShape) and the crop's Shape(start, end) of opset 15 (parseSlice).
    --size HxW: static input dims and the crop as a plain Shape -> Slice."""
    r = run("onnx", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "any.onnx",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with pytest.raises(cv2.error, match="isDynamicShape"):       # why --size exists
        cv2.dnn.readNetFromONNX(str(tmp_path / "any.onnx"))
    r = run("onnx", "voc-fcn-alexnet", "--weights", alexnet_weights, "--size", "64x80",
            "--out", "fixed.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(1, 3, 64, 80)" in r.stdout
    m = onnx.load(str(tmp_path / "fixed.onnx"))
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 80]
    assert {p.key: p.value for p in m.metadata_props}["input_size"] == "64x80"
    assert not [n.name for n in m.graph.node if n.op_type == "Shape" and n.attribute]

    x = images.preprocess(images.rgb_array(shared_data / "photos/cat.bmp")[:64, :80],
                          DATASETS["voc"].mean)[None]
    cv = cv2.dnn.readNetFromONNX(str(tmp_path / "fixed.onnx"))
    cv.setInput(x, "data")
    assert_scores_agree(cv.forward("score"), caffe_scores(alexnet_weights, x))


def test_kit_size_crops_the_images_for_its_fixed_size_export(alexnet_weights, shared_data,
                                                             tmp_path):
    """kit --size HxW: the fixed-size export, each image's centre HxW (a PNG: the pixels
    the reference saw), and references at that size; OpenCV 4.x on the kit's ONNX file
    and the image, prepared by the file's metadata alone, gives the reference's scores.
    An image smaller than the size is refused before anything is written."""
    cat = shared_data / "photos/cat.bmp"
    r = run("kit", "voc-fcn-alexnet", "--weights", alexnet_weights, "--size", "4000x64",
            "--out", "big", "--image", cat, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert str(cat) in r.stderr and "smaller than --size 4000x64" in r.stderr
    assert not (tmp_path / "big").exists()

    r = run("kit", "voc-fcn-alexnet", "--weights", alexnet_weights, "--size", "64x80",
            "--out", "kit", "--image", cat, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kit = tmp_path / "kit"
    png = kit / "images/cat.png"
    rgb = images.rgb_array(cat)
    top, left = (rgb.shape[0] - 64) // 2, (rgb.shape[1] - 80) // 2
    assert (np.asarray(Image.open(png)) == rgb[top:top + 64, left:left + 80]).all()
    ref = np.load(kit / "reference/cat.npz")
    meta = json.loads(str(ref["meta"]))
    assert meta["image_sha256"] == files.checksum(png) and meta["image_hw"] == [64, 80]
    assert "64x80" in (kit / "README.md").read_text()

    m = onnx.load(str(kit / "voc-fcn-alexnet.onnx"))
    recipe = json.loads({p.key: p.value for p in m.metadata_props}["preprocessing"])["data"]
    x = np.asarray(Image.open(png), np.float32)[:, :, recipe["channels"]] - recipe["mean"]
    x = np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)[None]
    np.testing.assert_allclose(x, ref["input/data"], rtol=0, atol=1e-4)
    cv = cv2.dnn.readNetFromONNX(str(kit / "voc-fcn-alexnet.onnx"))
    cv.setInput(x, "data")
    assert_scores_agree(cv.forward("score"), ref["blob/score"])


def test_ports_md_states_each_inputs_recipe():
    """The preprocessing a port needs, for every input of every model: docs/ports.md
    states each recipe the ONNX metadata and the kit give (Reader.recipe: one home),
    word for word. It said "RGB -> BGR minus the mean" for HHA and depth too."""
    text = (REPO / "docs/ports.md").read_text()
    missing = {(name, i, r["steps"]) for name, m in zoo.MODELS.items()
               for i, r in m.input_recipes().items() if f"`{r['steps']}`" not in text}
    assert not missing


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
    recipe = zoo.MODELS["voc-fcn-alexnet"].input_recipes()["data"]
    assert info["preprocessing"] == {"data": recipe}
    assert recipe["steps"] in (kit / "README.md").read_text()

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


# ---------------------------------------------------------------------------
# The kit appears whole or not at all, one at a time, over nothing but a kit


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory):
    """camvid-fcn8s-squeezenet weights (random, bilinear upsampling): a second model
    whose export is small (3 MB), for the kit tests that need two models or a
    small kit."""
    net = caffe.Net(str(REPO / "camvid-fcn8s-squeezenet/deploy.prototxt"), caffe.TEST)
    fill_random(net, seed=5, scale=0.05)
    interp(net)
    path = tmp_path_factory.mktemp("weights") / "squeezenet-random.caffemodel"
    net.save(str(path))
    return path


def entries(folder):
    """Every file and folder under ``folder``, hidden ones included, relative."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


KIT_FILES = ["README.md", "check.py", "classes.json", "images", "reference"]


def test_kit_checks_every_input_before_it_writes(alexnet_weights, shared_data, tmp_path):
    """A non-image --image exited 2 but left the ONNX file, images/ and .fcn-output;
    weights that do not fit, or a model that reads no RGB image, left a folder holding
    only .fcn-output. Every input is read (every image decoded) before anything is
    written: nothing appears, not even --out's parent folders."""
    cat = shared_data / "photos/cat.bmp"
    (tmp_path / "notes.jpg").write_text("not an image\n")
    (tmp_path / "cut.jpg").write_bytes((shared_data / "voc-demo/image.jpg").read_bytes()[:3000])
    before = entries(tmp_path)
    for args, says in [(["voc-fcn-alexnet", "--image", cat, "--image", "notes.jpg"],
                        "notes.jpg"),
                       (["voc-fcn-alexnet", "--image", cat, "--image", "cut.jpg"], "cut.jpg"),
                       (["voc-fcn8s", "--image", cat], "fcn-alexnet-random.caffemodel"),
                       (["nyud-fcn32s-hha", "--image", cat], "reads hha input")]:
        r = run("kit", *args, "--weights", alexnet_weights, "--out", "new/kit", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert entries(tmp_path) == before, r.stderr


def test_kit_on_a_disk_without_room_for_all_of_it_writes_nothing(squeezenet_weights,
                                                                 shared_data, small_disk):
    """Free space was checked file by file: a disk with room for the ONNX file and one
    reference, not two, was left holding half a kit. The whole kit's size is checked
    before anything is written."""
    onnx_mb = squeezenet_weights.stat().st_size
    disk = small_disk((onnx_mb + 12 * 2 ** 20) // 1024)       # the ONNX file and ~1 reference
    r = run("kit", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--out", "kit",
            "--image", shared_data / "photos/cat.bmp", "--image",
            shared_data / "voc-demo/image.jpg", cwd=disk)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not enough disk space" in r.stderr and "kit" in r.stderr, r.stderr
    assert entries(disk) == []


def kit_process(weights, images_, out, cwd, model="voc-fcn-alexnet", *more):
    """The kit command as a user at a terminal starts it: Ctrl-C (SIGINT) in its
    default action even where this test runs with SIGINT ignored (started with `&`
    from a script, as POSIX has background jobs: the kit then ignored the test's
    Ctrl-C and finished)."""
    args = [a for i in images_ for a in ("--image", i)]
    return subprocess.Popen([sys.executable, str(REPO / "reference.py"), "kit", model,
                             "--weights", str(weights), "--out", str(out), *map(str, args),
                             *more], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(done, p, timeout=300):
    end = time.time() + timeout
    while not done():
        assert p.poll() is None, p.communicate()
        assert time.time() < end, "timed out"
        time.sleep(0.05)


def test_an_interrupted_kit_leaves_no_part_of_itself(alexnet_weights, shared_data, tmp_path):
    """Ctrl-C once the ONNX file was written left a partial kit (no references); a kill
    left one too. Interrupted, nothing is left; killed, no --out (its hidden temporary
    folder is swept by the next kit into that --out)."""
    src = tmp_path / "in"
    src.mkdir()
    pics = []
    for name in "abcd":
        pics.append(src / f"{name}.bmp")
        pics[-1].write_bytes((shared_data / "photos/cat.bmp").read_bytes())
    before = entries(tmp_path)

    def onnx_written():
        return any(p.name == "voc-fcn-alexnet.onnx" for p in tmp_path.rglob("*.onnx"))
    p = kit_process(alexnet_weights, pics, "kit", tmp_path)
    wait_for(onnx_written, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130 and "interrupted" in err, (p.returncode, out, err)
    assert entries(tmp_path) == before

    p = kit_process(alexnet_weights, pics, "kit", tmp_path)
    wait_for(onnx_written, p)
    p.kill()
    p.communicate(timeout=60)
    assert not (tmp_path / "kit").exists()

    p = kit_process(alexnet_weights, pics[:1], "kit", tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert [e for e in entries(tmp_path) if e not in before and e.split("/")[0] != "kit"] == []
    assert sorted(os.listdir(tmp_path / "kit/reference")) == ["a.npz"]


def test_two_kits_into_one_folder_one_refuses(alexnet_weights, shared_data, tmp_path):
    """Two kits into one --out both exited 0, their files mixed. One holds the folder;
    the other refuses in one line, naming it, and the folder holds one whole kit."""
    cat = shared_data / "photos/cat.bmp"
    ps = [kit_process(alexnet_weights, [cat], "kit", tmp_path) for _ in range(2)]
    done = [p.communicate(timeout=600) for p in ps]
    assert sorted(p.returncode for p in ps) == [0, 2], done
    err = next(e for p, (_, e) in zip(ps, done) if p.returncode == 2)
    assert err.count("\n") == 1 and "in use by process" in err, err
    assert entries(tmp_path / "kit") == sorted(
        [".fcn-output", "images/cat.bmp", "reference/cat.npz", "voc-fcn-alexnet.onnx",
         *KIT_FILES])
    assert [e for e in entries(tmp_path) if e.split("/")[0] != "kit"] == []


def test_a_kit_into_an_old_kit_replaces_it_whole(alexnet_weights, squeezenet_weights,
                                                shared_data, tmp_path):
    """A kit for another model into an existing kit kept the old model's files (its
    ONNX file, the references of images it no longer has), and a port checked against
    them diverged where nothing was wrong. A kit replaces a kit whole; a file of the
    user's put into one (a port's blobs) is never removed: the kit is refused."""
    cat, demo = shared_data / "photos/cat.bmp", shared_data / "voc-demo/image.jpg"
    r = run("kit", "voc-fcn-alexnet", "--weights", alexnet_weights, "--out", "kit",
            "--image", demo, "--image", cat, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("kit", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--size",
            "64x80", "--out", "kit", "--image", cat, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kit = tmp_path / "kit"
    want = sorted([".fcn-output", "images/cat.png", "reference/cat.npz",
                   "camvid-fcn8s-squeezenet.onnx", *KIT_FILES])
    assert entries(kit) == want
    assert [e for e in entries(tmp_path) if e.split("/")[0] != "kit"] == []

    (kit / "port.npz").write_bytes(b"the user's")
    r = run("kit", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--out", "kit",
            "--image", cat, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "port.npz" in r.stderr
    assert entries(kit) == sorted(want + ["port.npz"])
    assert (kit / "port.npz").read_bytes() == b"the user's"


def test_kit_hint_is_a_command_that_can_be_pasted(squeezenet_weights, shared_data, tmp_path):
    """The "check a port with:" line did not quote a path with spaces."""
    r = run("kit", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--size",
            "64x80", "--out", "my kit", "--image", shared_data / "photos/cat.bmp",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hint = r.stdout.strip().splitlines()[-1]
    assert hint.startswith("check a port with: ")
    words = shlex.split(hint[len("check a port with: "):])
    assert words[0] == "python" and words[-1] == "port.npz", words
    assert Path(words[1]) == (tmp_path / "my kit/check.py").absolute() or \
        (tmp_path / words[1]).resolve() == (tmp_path / "my kit/check.py").resolve()
    assert (tmp_path / words[2]).is_file(), words


# ---------------------------------------------------------------------------
# Whose file is it


def test_onnx_replaces_only_an_onnx_model_it_wrote(squeezenet_weights, tmp_path):
    """Ownership was "fcn-caffe in the first 64 bytes": onnx --out notes.txt replaced a
    text file that began with those words, and an infer.py overlay (its JPEG comment)
    was replaced by an ONNX file. Only an ONNX model this project wrote (its producer
    and metadata, read as ONNX) is replaced."""
    rgb = np.full((40, 50, 3), 90, np.uint8)
    visual.save_jpeg(tmp_path / "cat_overlay.jpg", rgb)
    visual.save_label_png(tmp_path / "cat.png", np.zeros((40, 50), np.uint8))
    (tmp_path / "notes.txt").write_text("fcn-caffe: notes on the port\n")
    m = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []), producer_name="other")
    (tmp_path / "theirs.onnx").write_bytes(m.SerializeToString())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name in before:
        r = run("onnx", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--out",
                name, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "was not written by this project" in r.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    for _ in range(2):                                  # its own file: replaced
        r = run("onnx", "camvid-fcn8s-squeezenet", "--weights", squeezenet_weights, "--out",
                "s.onnx", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert onnx_export.written_by_us(tmp_path / "s.onnx")


def test_a_folder_given_as_weights_is_named_a_folder(tmp_path):
    """--weights DIR said "weights file not found"."""
    (tmp_path / "w").mkdir()
    with pytest.raises(caffemodel.WeightsError, match="is a folder, not a weights file"):
        caffemodel.read_shapes(tmp_path / "w")
    r = run("onnx", "camvid-fcn8s-squeezenet", "--weights", "w", "--out", "s.onnx",
            cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "w is a folder, not a weights file" in r.stderr


def test_write_atomic_sweeps_its_stale_temporaries(tmp_path):
    """A kill during a write left its hidden temporary file (.s.tmpPID.onnx, 75 MB)
    for good. The next write of that file removes those whose process is gone, and
    keeps one a live process is writing."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".s.tmp{dead.pid}.onnx"
    live = tmp_path / f".s.tmp{os.getppid()}.onnx"
    other = tmp_path / f".t.tmp{dead.pid}.onnx"                # another file's
    for p in (stale, live, other):
        p.write_bytes(b"x" * 1000)
    files.write_atomic(tmp_path / "s.onnx", lambda tmp: tmp.write_bytes(b"model"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name,
                                                                "s.onnx"])

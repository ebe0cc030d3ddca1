"""The model zoo: generated files are what the builder makes today, every deploy
net runs at any input size; its ONNX export (reference.py onnx), fed as its metadata
alone says, computes the same under onnxruntime, and its fixed-size export under
OpenCV 4.x; train/val nets match their deploy nets, and the FCN-VGG16 params line up
with VGG-16's so surgery can fill them."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from PIL import Image

import caffe
from caffe.proto import caffe_pb2

import reference
from fcn import builder, caffemodel, generate, images, prototxt, zoo
from fcn.datasets import DATASETS
from fcn.paths import SHARED_DATA
from conftest import REPO, fill_he

caffe.set_mode_cpu()

RELEASE_DIRS = {
    "voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
    "nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d", "nyud-fcn32s-color-hha",
    "siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s",
    "pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s",
}
# Largest first: Caffe grows its buffers once and reuses them for smaller inputs.
SIZES = [(37, 53), (1, 1)]     # (a whole VOC image: tests/test_infer_reference.py)
# Caffe against onnxruntime: crops of a real photo, (H, W), one of them odd; the
# fixed-size export (OpenCV 4.x) at the first.
PHOTO_SIZES = [(75, 101), (128, 96)]
PHOTO = SHARED_DATA / "voc-demo/image.jpg"


def parse(path, msg=caffe_pb2.NetParameter):
    return text_format.Parse((REPO / path).read_text(), msg())


def test_zoo_has_every_release_directory():
    assert RELEASE_DIRS <= set(zoo.MODELS)
    for name in RELEASE_DIRS:
        files = set(os.listdir(REPO / name))
        assert {"deploy.prototxt", "solver.prototxt", "net.py", "solve.py"} <= files, name
        assert set(zoo.MODELS[name].files) <= files


def test_committed_files_equal_what_the_builder_makes_today():
    generated = generate.all_files()
    assert len(generated) > 100
    stale = [rel for rel, text in generated.items()
             if not (REPO / rel).is_file() or (REPO / rel).read_text() != text]
    assert not stale, f"regenerate with 'python nets.py': {stale}"
    # and nothing generated-looking is committed that the builder no longer makes
    on_disk = {str(p.relative_to(REPO)) for d in list(zoo.MODELS) + ["ilsvrc-nets"]
               for p in (REPO / d).iterdir()
               if p.name != "README.md" and p.suffix != ".caffemodel"}    # weights: not ours
    assert on_disk == {k for k in generated}


@pytest.fixture(scope="module")
def classifier_shapes():
    """Param name -> shapes of the ILSVRC classifiers' deploy nets."""
    out = {}
    for backbone, c in zoo.CLASSIFIERS.items():
        net = caffe.Net(str(c.dir / c.proto), caffe.TEST)
        out[backbone] = {k: [tuple(b.data.shape) for b in v] for k, v in net.params.items()}
        del net
    return out


def outputs(model):
    return ["score" + h.suffix for h in model.heads]


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_deploy_net_at_any_size_and_its_onnx_export(name, classifier_shapes, request,
                                                    tmp_path):
    model = zoo.MODELS[name]
    net = caffe.Net(str(REPO / name / "deploy.prototxt"), caffe.TEST)

    # What surgery relies on: wherever names agree with the classifier (conv1_1..fc7),
    # shapes agree, and fc6/fc7 hold the same number of elements.
    ref = classifier_shapes[model.backbone]
    streams = ["color", "hha"] if model.modality == "color-hha" else [""]
    matched = 0
    for layer, params in net.params.items():
        base = next((layer[:-len(s)] for s in streams if s and layer.endswith(s)), layer)
        if base not in ref:
            continue
        matched += 1
        got = [tuple(p.data.shape) for p in params]
        if base in ("fc6", "fc7"):
            assert [np.prod(s) for s in got] == [np.prod(s) for s in ref[base]], layer
        else:
            assert got == ref[base], layer
    expected = {"vgg16": 15, "caffenet": 7, "squeezenet": 25}[model.backbone] * len(streams)
    expected -= model.modality == "color-d"      # conv1_1_bgrd takes 4 channels
    assert matched == expected

    fill_he(net, seed=len(name))
    if model.backbone == "squeezenet":         # make demo's surgery: the trained trunk
        caffemodel.copy_weights(net, request.getfixturevalue("squeezenet_fcn_init"),
                                complete=False)
    inputs = [name for name, _ in builder.MODALITIES[model.modality]]
    for h, w in SIZES:
        for blob in inputs:
            net.blobs[blob].reshape(1, net.blobs[blob].data.shape[1], h, w)
        net.reshape()
        rng = np.random.default_rng(h * w)
        out = net.forward(**{b: rng.uniform(-100, 100, net.blobs[b].data.shape)
                             .astype(np.float32) for b in inputs})
        for o in outputs(model):
            c = next(x.num_classes for x in model.heads if "score" + x.suffix == o)
            assert out[o].shape == (1, c, h, w), (name, o, h, w)
            assert np.isfinite(out[o]).all() and np.abs(out[o]).max() > 0

    # Its ONNX export: onnx.checker with full shape inference, then onnxruntime on
    # the CPU against Caffe (the runtime's basic graph optimisations; the rest are
    # its own business and cost seconds per net), fed as a port would be: raw files
    # (an RGB image, an HHA image, a depth map in millimetres) made into inputs by
    # the recipe in the file's metadata and nothing else; Caffe gets them through the
    # project's own preprocessing (infer.py's, or the dataset reader's).
    proto = parse(f"{name}/deploy.prototxt")
    data = reference.onnx_model(model, proto, net, "random.caffemodel", "0" * 64)
    sess = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
    del data          # the metadata from the session: parsing 540 MB again costs seconds
    recipes = json.loads(sess.get_modelmeta().custom_metadata_map["preprocessing"])
    assert [i.name for i in sess.get_inputs()] == inputs == list(recipes)
    assert all(i.shape[0] == "N" and i.shape[2:] == ["H", "W"] for i in sess.get_inputs())
    assert [o.name for o in sess.get_outputs()] == outputs(model)
    if not PHOTO.is_file():
        pytest.skip(f"SHARED DATA MISSING: {PHOTO} (Caffe checked; the ONNX comparison "
                    "runs on that photo)")
    photo = images.rgb_array(PHOTO)
    for hw in PHOTO_SIZES:
        raw = raw_files(photo, hw, tmp_path / "x".join(map(str, hw)))
        x = project_inputs(model, raw)
        port = {b: follow(recipes[b], raw[recipes[b]["kind"]]) for b in inputs}
        for blob, v in x.items():
            net.blobs[blob].reshape(*v.shape)
        net.reshape()
        want = net.forward(**x)
        got = dict(zip(outputs(model), sess.run(outputs(model), port)))
        for o in outputs(model):
            assert got[o].shape == want[o].shape, (name, hw, o)
            spread = float(want[o].max() - want[o].min())
            err = float(np.abs(got[o] - want[o]).max()) / spread
            agree = float((got[o].argmax(1) == want[o].argmax(1)).mean())
            assert spread > 0 and err <= 1e-4 and agree >= 0.999, (name, hw, o, err, agree)
        if hw == PHOTO_SIZES[0]:
            fixed_size_in_opencv(model, proto, net, port, want, hw)


def fixed_size_in_opencv(model, proto, net, port, want, hw):
    """reference.py onnx --size: static N, H, W and a crop OpenCV 4.x reads, so that
    cv2.dnn imports it; its scores are Caffe's (within 1e-4 of the largest, the
    argmax on 99.9% of the pixels)."""
    data = reference.onnx_model(model, proto, net, "random.caffemodel", "0" * 64, size=hw)
    m = onnx.load_from_string(data)
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input] == \
        [[1, v.shape[1], *hw] for v in port.values()]
    assert {p.key: p.value for p in m.metadata_props}["input_size"] == "{}x{}".format(*hw)
    del m
    cv = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
    del data
    for blob, v in port.items():
        cv.setInput(v, blob)
    got = dict(zip(outputs(model), cv.forward(outputs(model))))
    for o in outputs(model):
        assert got[o].shape == want[o].shape, (model.name, o)
        err = float(np.abs(got[o] - want[o]).max()) / float(np.abs(want[o]).max())
        agree = float((got[o].argmax(1) == want[o].argmax(1)).mean())
        assert err <= 1e-4 and agree >= 0.999, (model.name, o, err, agree)


def session_options():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return so


def raw_files(rgb, hw, d):
    """The photo cropped to hw as the files a port starts from, in NYUDv2's layout
    (img_1): an RGB PNG; an HHA PNG (the photo's channels reversed, so that a flip
    shows); a 16-bit depth PNG in millimetres (500 to 8150 from the brightness, a
    few pixels 0: missing depth). {kind: path}."""
    h, w = hw
    crop = rgb[40:40 + h, 60:60 + w]
    depth = (500 + 30 * crop.mean(axis=2)).astype(np.uint16)
    depth[::7, ::5] = 0
    out = {}
    for kind, folder, a in (("color", "images", crop), ("hha", "hha", crop[:, :, ::-1]),
                            ("depth", "depth", depth)):
        out[kind] = d / "nyud/data" / folder / "img_1.png"
        out[kind].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(a)).save(out[kind])
    return out


def project_inputs(model, raw):
    """The net's inputs as the project makes them: NYUDv2's reader for its nets (the
    data layer's tops, in order), infer.py's preprocessing of a photo otherwise."""
    inputs = [name for name, _ in builder.MODALITIES[model.modality]]
    ds = DATASETS[model.eval.dataset]
    if ds.name != "nyud":
        return {"data": images.preprocess(images.rgb_array(raw["color"]), ds.mean)[None]}
    tops = ds.layer_params(model.modality, [])["tops"]
    reader = ds.open(raw["color"].parents[3])
    return {b: reader.load("1", t)[None] for b, t in zip(inputs, tops)}


def follow(recipe, path):
    """What a port does with the recipe of the ONNX metadata and nothing else: the
    file's pixels (channels as stored) as float32, the recipe's channels in its order,
    the log where it says, minus its mean, H x W x C -> 1 x C x H x W."""
    x = np.asarray(Image.open(path), dtype=np.float32)
    x = x[:, :, None] if x.ndim == 2 else x
    x = x[:, :, recipe["channels"]]
    if recipe["log_min"] is not None:
        x = np.log(np.maximum(x, np.float32(recipe["log_min"])))
    x = x - np.asarray(recipe["mean"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def graph(proto, drop_types=("Python", "Input", "SoftmaxWithLoss")):
    return [(l.name, l.type, list(l.bottom), list(l.top), l.param, l.convolution_param,
             l.pooling_param, l.crop_param, l.eltwise_param, l.scale_param,
             l.dropout_param, l.lrn_param, l.concat_param)
            for l in proto.layer if l.type not in drop_types]


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_train_and_eval_nets_match_deploy_apart_from_data_and_loss(name):
    model = zoo.MODELS[name]
    deploy = parse(f"{name}/deploy.prototxt")
    assert deploy.layer[0].type == "Input"
    assert not any(l.type in ("Python", "SoftmaxWithLoss") for l in deploy.layer)
    for fname, data in zip(model.files, (model.train, model.eval)):
        net = parse(f"{name}/{fname}")
        first = net.layer[0]
        assert first.type == "Python" and first.python_param.module == "layers"
        assert first.python_param.layer == DATASETS[data.dataset].layer
        assert graph(net) == graph(deploy), fname
        losses = [l for l in net.layer if l.type == "SoftmaxWithLoss"]
        assert [l.bottom[0] for l in losses] == outputs(model)
        for l in losses:
            assert l.loss_param.ignore_label == 255
            assert l.loss_param.normalize == model.normalize


def crop_offsets(proto):
    return [l.crop_param.offset[0] for l in proto.layer if l.type == "Crop"]


RELEASE = sorted(RELEASE_DIRS)
CPU_SCALE = sorted(set(zoo.MODELS) - RELEASE_DIRS)


@pytest.mark.parametrize("name", RELEASE)
def test_release_facts(name):
    """What the paper's nets are, checked on the committed prototxts."""
    model = zoo.MODELS[name]
    net = parse(f"{name}/deploy.prototxt")
    layers = {l.name: l for l in net.layer}
    conv1 = [l for l in net.layer if l.type == "Convolution"][0]
    assert conv1.convolution_param.pad == [100]

    per_head = {32: [19], 16: [5, 27], 8: [5, 9, 31]}[model.stride]
    if model.backbone == "caffenet":
        per_head = [18]                           # the release's 63-pixel kernel
    assert crop_offsets(net) == per_head * len(model.heads)

    for l in net.layer:
        if l.type == "Deconvolution":
            c = l.convolution_param
            assert not c.bias_term and [p.lr_mult for p in l.param] == [0]
            want = 63 if model.backbone == "caffenet" else 2 * c.stride[0]
            assert c.kernel_size == [want], l.name
        if l.type == "Convolution" and l.name.startswith("score"):
            assert l.convolution_param.kernel_size == [1]
            assert [(p.lr_mult, p.decay_mult) for p in l.param] == [(1, 1), (2, 0)]
        if l.type == "Dropout":
            assert l.dropout_param.dropout_ratio == 0.5 and l.top == l.bottom

    fc6 = [l for n_, l in layers.items() if n_.startswith("fc6")][0]
    assert fc6.type == "Convolution" and fc6.convolution_param.num_output == 4096
    assert fc6.convolution_param.kernel_size == [7 if model.backbone == "vgg16" else 6]
    if model.backbone == "vgg16":
        for l in net.layer:
            if l.type == "Convolution" and not l.name.startswith("score"):
                assert [(p.lr_mult, p.decay_mult) for p in l.param] == [(1, 1), (2, 0)]
    if model.atonce:
        assert layers["scale_pool4"].scale_param.filler.value == pytest.approx(0.01)
        assert layers["scale_pool3"].scale_param.filler.value == pytest.approx(1e-4)
        assert [p.lr_mult for p in layers["scale_pool4"].param] == [0]
        assert layers["score_pool4"].bottom == ["scale_pool4"]
    if model.modality == "color-hha":
        fused = layers["score_fused"]
        assert list(fused.bottom) == ["score_frcolor", "score_frhha"]
        assert list(fused.eltwise_param.coeff) == [0.5, 0.5]


@pytest.mark.parametrize("name", RELEASE)
def test_solver(name):
    model = zoo.MODELS[name]
    s = parse(f"{name}/solver.prototxt", caffe_pb2.SolverParameter)
    assert s.train_net == model.files[0] and list(s.test_net) == [model.files[1]]
    assert list(s.test_iter) == [DATASETS[model.eval.dataset].splits[model.eval.split]]
    assert s.lr_policy == "fixed" and s.weight_decay == pytest.approx(5e-4)
    if model.backbone == "caffenet":
        assert (s.base_lr, s.momentum, s.iter_size) == (pytest.approx(1e-4),
                                                         pytest.approx(0.9), 20)
    else:
        assert s.momentum == pytest.approx(0.99) and s.iter_size == 1
        want = 1e-10 if model.atonce else {32: 1e-10, 16: 1e-12, 8: 1e-14}[model.stride]
        if model.modality == "color-hha" or name == "siftflow-fcn8s":
            want = 1e-12       # the release's late-fusion solver, and its siftflow-fcn8s (HEAD)
        # relative only: approx's default absolute tolerance (1e-12) would accept any of
        # 1e-10, 1e-12 and 1e-14 for any other
        assert s.base_lr == pytest.approx(want, rel=1e-6, abs=0)


def test_split_sizes_are_the_papers():
    assert DATASETS["voc"].splits["seg11valid"] == 736
    assert DATASETS["nyud"].splits["test"] == 654
    assert DATASETS["siftflow"].splits["test"] == 200


def test_builder_rejects_bad_requests_with_one_line():
    cases = [
        (dict(stride=4), "unknown stride 4"),
        (dict(heads=(builder.Head("", 0, "label"),)), "needs at least 1"),
        (dict(modality="thermal"), "unknown modality 'thermal'"),
        (dict(backbone="resnet"), "unknown backbone 'resnet'"),
        (dict(backbone="caffenet", stride=8), "its FCN strides are 32"),
        (dict(backbone="squeezenet", stride=32), "its FCN strides are 16, 8, 4"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(builder.BuildError) as e:
            builder.fcn(**kwargs)
        assert msg in str(e.value) and "\n" not in str(e.value)


def run_py(script, *args, cwd):
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GLOG_minloglevel": "2"})


def test_net_py_writes_into_its_own_directory_from_anywhere(tmp_path):
    repo = tmp_path / "repo"
    (repo / "voc-fcn16s").mkdir(parents=True)
    shutil.copy(REPO / "nets.py", repo / "nets.py")
    shutil.copytree(REPO / "fcn", repo / "fcn", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "voc-fcn16s/net.py", repo / "voc-fcn16s/net.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_py(repo / "voc-fcn16s/net.py", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert list(elsewhere.iterdir()) == []
    for f in generate.model_files(zoo.MODELS["voc-fcn16s"]):
        assert (repo / "voc-fcn16s" / f).read_text() == (REPO / "voc-fcn16s" / f).read_text()
    assert not (repo / "voc-fcn8s").exists()      # only its own directory


def test_nets_cli_unknown_model_is_one_line(tmp_path):
    r = run_py(REPO / "nets.py", "voc-fcn4s", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown model 'voc-fcn4s'" in r.stderr
    r = run_py(REPO / "nets.py", "--check", cwd=tmp_path)
    assert r.returncode == 0, r.stdout


def test_ilsvrc_readme_names_each_classifier_source():
    text = (REPO / "ilsvrc-nets/README.md").read_text()
    for c in zoo.CLASSIFIERS.values():
        assert c.weights in text and c.proto in text
        assert (c.url in text and c.known.sha1 in text
                and f"prepare.py get weights {c.backbone}" in text) if c.url \
            else f"prepare.py get weights {c.backbone}" in text


def test_squeezenet_fcns():
    """The CPU-scale nets: SqueezeNet's fire modules under their release names, conv1
    padded by builder.SQUEEZENET_PAD, features scaled before each score layer, odd
    bilinear kernels, and the paper's skips one stride finer each."""
    assert CPU_SCALE == ["camvid-fcn16s-squeezenet", "camvid-fcn4s-squeezenet",
                         "camvid-fcn8s-squeezenet"]
    for name in CPU_SCALE:
        model = zoo.MODELS[name]
        net = parse(f"{name}/deploy.prototxt")
        layers = {l.name: l for l in net.layer}
        assert layers["conv1"].convolution_param.pad == [builder.SQUEEZENET_PAD]
        assert "conv_final" not in layers and "pool_final" not in layers
        assert layers["score_fr"].bottom == ["scale_fr"]
        assert layers["scale_fr"].scale_param.filler.value == pytest.approx(1 / 32)
        skips = {16: [], 8: ["fire8"], 4: ["fire8", "fire4"]}[model.stride]
        for key in skips:
            assert layers[f"score_{key}"].bottom == [f"scale_{key}"]
            assert layers[f"scale_{key}"].bottom == [f"{key}/concat"]
        deconvs = [l for l in net.layer if l.type == "Deconvolution"]
        assert [l.convolution_param.kernel_size[0] for l in deconvs] == \
            [2 * l.convolution_param.stride[0] - 1 for l in deconvs]
        assert deconvs[-1].convolution_param.stride == [model.stride]
        train = parse(f"{name}/train.prototxt")
        assert json.loads(train.layer[0].python_param.param_str) == \
            {"dir": "camvid", "seed": 1337, "split": "train"}


@pytest.mark.parametrize("name", CPU_SCALE)
def test_camvid_solver(name):
    """The CamVid schedule (README: 'The method at CPU scale'): normalized loss, SGD with
    momentum 0.9 at a fixed 1e-3, weight decay 5e-4, one whole image per batch."""
    s = parse(f"{name}/solver.prototxt", caffe_pb2.SolverParameter)
    assert (s.base_lr, s.momentum, s.weight_decay, s.iter_size, s.lr_policy) == (
        pytest.approx(1e-3), pytest.approx(0.9), pytest.approx(5e-4), 1, "fixed")
    assert list(s.test_iter) == [101]
    train = parse(f"{name}/train.prototxt")
    assert [l.loss_param.normalize for l in train.layer if l.type == "SoftmaxWithLoss"] == [True]


def test_prototxt_text_is_the_same_under_every_protobuf():
    """prototxt.to_text, not str(msg): protobuf 7 orders fields by number and writes 1.0
    where 4.x wrote 1, so under it every committed file looked stale (the offline
    suite on Python 3.12 with protobuf 7.36 found that)."""
    from caffe.proto import caffe_pb2
    s = caffe_pb2.SolverParameter(test_initialization=False, test_interval=5, base_lr=1e-10,
                                  momentum=0.99, weight_decay=1.0, snapshot_prefix='a"b')
    assert prototxt.to_text(s) == ('test_interval: 5\ntest_initialization: false\nbase_lr: 1e-10\n'
                               'momentum: 0.99\nweight_decay: 1\nsnapshot_prefix: "a\\"b"\n')


def test_training_length_and_scoring_follow_the_release_solve_py():
    """solve.py's defaults (and reproduce.py's stages) run what the release's solve.py
    loops run: N steps of test_interval iterations, scoring after each."""
    loops = {"voc": (25, 4000), "nyud": (50, 2000), "siftflow": (50, 2000),
             "pascalcontext": (50, 8000)}
    for m in zoo.MODELS.values():
        if m.backbone == "squeezenet":
            continue
        steps, interval = (75, 4000) if m.name == "voc-fcn8s-atonce" else \
            loops[m.train.dataset if m.train.dataset != "sbdd" else "voc"]
        assert (m.train_iters, m.test_interval) == (steps * interval, interval), m.name

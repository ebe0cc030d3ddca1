"""infer.py and reference.py with real images, real Caffe and a real caffemodel."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2

import reference
from fcn import images, memory, visual, zoo
from fcn.segmenter import Segmenter
from fixtures import fake_png
from conftest import REPO

caffe.set_mode_cpu()


def run(script, *args, cwd, env=None):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "GLOG_minloglevel": "2", **(env or {})})


def test_infer_the_voc_demo_image(shared_data, alexnet_weights, tmp_path):
    r = run("infer.py", shared_data / "voc-demo/image.jpg", "--model", "voc-fcn-alexnet",
            "--weights", alexnet_weights, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    device, line = r.stdout.splitlines()[:2]
    assert device.startswith("device: ")          # the first line names the device
    assert line.startswith(str(shared_data / "voc-demo/image.jpg") + ": 334x500, ")
    assert " s: " in line and "%" in line
    png = Image.open(tmp_path / "o/image.png")
    assert png.mode == "P" and png.size == (334, 500)
    classes = set(np.unique(np.array(png)))
    assert classes <= set(range(21))
    overlay = Image.open(tmp_path / "o/image_overlay.jpg")
    assert overlay.mode == "RGB" and overlay.width == 334 and overlay.height > 500   # + legend


def image_variants(tmp_path):
    """The same picture as greyscale, RGBA, 16-bit, palette and EXIF-rotated JPEG."""
    rgb = (np.random.default_rng(0).uniform(0, 255, (30, 50, 3))).astype(np.uint8)
    im = Image.fromarray(rgb)
    paths = {}
    im.convert("L").save(paths.setdefault("grey", tmp_path / "grey.png"))
    im.convert("RGBA").save(paths.setdefault("rgba", tmp_path / "rgba.png"))
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(
        paths.setdefault("grey16", tmp_path / "grey16.png"))
    im.convert("P").save(paths.setdefault("palette", tmp_path / "palette.png"))
    exif = Image.Exif()
    exif[0x0112] = 6                                          # rotate 90 degrees clockwise
    im.save(paths.setdefault("rotated", tmp_path / "rotated.jpg"), exif=exif.tobytes())
    return rgb, paths


def test_photo_rgb_converts_every_mode(tmp_path):
    rgb, paths = image_variants(tmp_path)
    for name, p in paths.items():
        a = images.load_photo(p)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, name
        assert a.shape[:2] == ((50, 30) if name == "rotated" else (30, 50)), name
    np.testing.assert_array_equal(images.load_photo(paths["rgba"]), rgb)
    grey16 = images.load_photo(paths["grey16"])
    np.testing.assert_array_equal(grey16[:, :, 1], rgb[:, :, 0])


def test_infer_handles_every_mode_and_reshapes_only_on_new_sizes(alexnet_weights, tmp_path):
    _, paths = image_variants(tmp_path)
    r = run("infer.py", *paths.values(), "--model", "voc-fcn-alexnet", "--weights",
            alexnet_weights, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o/rotated.png").size == (30, 50)
    assert Image.open(tmp_path / "o/grey16.png").size == (50, 30)

    seg = Segmenter(zoo.MODELS["voc-fcn-alexnet"], alexnet_weights)
    for h, w in [(30, 50), (30, 50), (40, 20), (40, 20), (30, 50)]:
        out = seg(np.zeros((h, w, 3), np.uint8))
        assert out["score"].shape == (h, w)
    assert seg.reshapes == 3


@pytest.mark.parametrize("case,says", [
    ("missing", "image not found"),
    ("text", "not an image"),
    ("empty", "has no pixels"),
    ("huge", "resize it to at most about"),
    ("memory", "GB of memory available"),
    ("model", "unknown model"),
    ("fit", "does not fit the net"),
    ("noweights", "get the released ones with 'python prepare.py get weights voc-fcn8s'"),
    ("hha", "reads hha input"),
])
def test_infer_bad_input_is_one_line(case, says, alexnet_weights, shared_data, tmp_path):
    img = shared_data / "voc-demo/image.jpg"
    args, env = [img, "--model", "voc-fcn-alexnet", "--weights", alexnet_weights], {}
    if case == "missing":
        args[0] = tmp_path / "nope.jpg"
    elif case == "text":
        (tmp_path / "t.jpg").write_text("hello")
        args[0] = tmp_path / "t.jpg"
    elif case == "empty":
        args[0] = fake_png(tmp_path / "e.png", 0, 10)
    elif case == "huge":
        args[0] = fake_png(tmp_path / "h.png", 60000, 40000)
    elif case == "memory":
        env = {"FCN_MAX_MEMORY_GB": "0.05"}
    elif case == "model":
        args[2] = "voc-fcn4s"
    elif case == "fit":
        args[2] = "voc-fcn32s"
    elif case == "noweights":
        args = [img, "--model", "voc-fcn8s"]
    elif case == "hha":
        args[2] = "nyud-fcn32s-hha"
    r = run("infer.py", *args, "--out", tmp_path / "o", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and says in err[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()      # a refused run leaves no folder it made


def test_reference_export_compare(alexnet_weights, shared_data, tmp_path):
    small = tmp_path / "small.jpg"         # conv3 33x30: 72 tiles, Winograd's (patch 0024)
    Image.open(shared_data / "voc-demo/image.jpg").resize((300, 347)).save(small)
    r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", alexnet_weights,
            "--image", small, "--out", tmp_path / "a.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a = reference.load(tmp_path / "a.npz")
    meta = json.loads(str(a["meta"]))
    assert meta["model"] == "voc-fcn-alexnet" and meta["image_hw"] == [347, 300]
    assert meta["caffe"]["sdist"] == "brocolli-caffe==9.0.2" and len(meta["weights_sha256"]) == 64

    # blob and param shapes are the deploy net's at this input size
    net = caffe.Net(str(REPO / "voc-fcn-alexnet/deploy.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(1, 3, 347, 300)
    net.reshape()
    for k, b in net.blobs.items():
        assert a[f"blob/{k}"].shape == tuple(b.shape), k
    for k, ps in net.params.items():
        for i, p in enumerate(ps):
            assert a[f"param/{k}/{i}"].shape == p.data.shape
    assert a["blob/score"].shape == (1, 21, 347, 300)
    np.testing.assert_array_equal(a["input/data"], a["blob/data"])

    # The export used BVLC's im2col arithmetic, not patch 0010's Winograd forward
    # (conv3 is a 3x3 convolution of 256 channels and 72 tiles, where Winograd applies).
    assert meta["conv_forward"] == "im2col + GEMM"
    for k, ps in net.params.items():
        for i, p in enumerate(ps):
            p.data[...] = a[f"param/{k}/{i}"]
    for flag in ("0", "1"):
        os.environ["CAFFE_WINOGRAD"] = flag
        try:
            net.reshape()
            net.forward(data=a["input/data"])
        finally:
            del os.environ["CAFFE_WINOGRAD"]
        conv3 = net.blobs["conv3"].data
        if flag == "0":
            np.testing.assert_array_equal(conv3, a["blob/conv3"])
        else:
            assert not np.array_equal(conv3, a["blob/conv3"])
            np.testing.assert_allclose(conv3, a["blob/conv3"], rtol=1e-4,
                                       atol=1e-5 * np.abs(conv3).max())

    r = run("reference.py", "compare", tmp_path / "a.npz", tmp_path / "a.npz", cwd=tmp_path)
    assert r.returncode == 0 and "arrays within" in r.stdout

    b = dict(a)
    b["blob/fc7"] = a["blob/fc7"] + 1e-2
    np.savez(tmp_path / "b.npz", **b)
    r = run("reference.py", "compare", tmp_path / "a.npz", tmp_path / "b.npz", cwd=tmp_path)
    assert r.returncode == 1
    bad = [l for l in r.stdout.splitlines() if l.rstrip().endswith("NO")]
    assert len(bad) == 1 and bad[0].startswith("blob/fc7")

    r = run("reference.py", "compare", tmp_path / "a.npz", tmp_path / "nope.npz", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


def test_memory_model_knows_the_im2col_band_of_our_caffe():
    """The memory estimate (fcn/memory.py) assumes the column-band size that patch 0009 and
    0019, the Winograd band that patch 0010 and the Winograd tile that patch 0021 compile
    into Caffe; they must not drift apart."""
    import re
    patch = (REPO / "third_party/caffe/patches/0009-conv-im2col-in-row-bands.patch").read_text()
    m = re.search(r"^\+\s*static const long kColBandElements = (\d+)L << (\d+);", patch, re.M)
    assert m, "kColBandElements not found in patch 0009"
    assert memory.COL_BAND_ELEMENTS == int(m.group(1)) << int(m.group(2))
    patch = (REPO / "third_party/caffe/patches/0010-conv-winograd-f2x3-forward.patch").read_text()
    m = re.search(r"^\+\s*static const long kWinogradBandElements = (\d+)L << (\d+);", patch, re.M)
    assert m, "kWinogradBandElements not found in patch 0010"
    assert memory.WINOGRAD_BAND_ELEMENTS == int(m.group(1)) << int(m.group(2))
    m = re.search(r"^\+\s*static const int kWinogradMinChannels = (\d+);", patch, re.M)
    assert m and memory.WINOGRAD_MIN_CHANNELS == int(m.group(1))
    patch = (REPO / "third_party/caffe/patches/"
             "0021-conv-winograd-f4x3-data-gradient-isa-dispatch.patch").read_text()
    m = re.search(r"^\+const int kWinogradTile = (\d+);", patch, re.M)
    assert m and memory.WINOGRAD_TILE == int(m.group(1))
    m = re.search(r"^\+const int kWinogradProducts = (\d+);", patch, re.M)
    assert m and memory.WINOGRAD_PRODUCTS == int(m.group(1)) == (memory.WINOGRAD_TILE + 2) ** 2
    patch = (REPO / "third_party/caffe/patches/"
             "0024-conv-winograd-weight-gradient-few-tiles-to-im2col.patch").read_text()
    m = re.search(r"^\+\s*static const int kWinogradMinTiles = (\d+);", patch, re.M)
    assert m and memory.WINOGRAD_MIN_TILES == int(m.group(1))
    patch = (REPO / "third_party/caffe/patches/0019-fc6-one-band-fast-2x2-max-pooling.patch")
    m = re.search(r"^\+\s*const long band_elements = std::max\(kColBandElements,\s*\n"
                  r"^\+\s*static_cast<long>\(this->blobs_\[0\]->count\(\)\)\);", patch.read_text(),
                  re.M)
    assert m, "patch 0019's band rule (the weights' count) not found"


def test_overlay_has_a_legend_of_the_classes_present():
    rgb = np.full((40, 200, 3), 128, np.uint8)
    label = np.zeros((40, 200), np.uint8)
    label[:, 100:] = 15                                   # person, half the pixels
    label[:5, :5] = 2                                     # bicycle, a few
    from fcn.datasets import DATASETS
    classes = DATASETS["voc"].classes
    out = visual.overlay(rgb, label, 0, classes)
    assert out.shape[1] == 200 and out.shape[0] > 40
    strip = out[40:].reshape(-1, 3)
    pal = visual.palette()
    colours = {tuple(c) for c in strip}
    assert tuple(pal[15]) in colours and tuple(pal[2]) in colours   # swatches drawn
    np.testing.assert_array_equal(out[5:40, :100], rgb[5:, :100])      # background untouched


def edited_weights(src, dst, keep=None, extra=b""):
    """A copy of a real caffemodel with only the layers ``keep`` accepts, then ``extra``
    appended (protobuf concatenation: what `cat a b` makes)."""
    net = caffe_pb2.NetParameter()
    net.ParseFromString(src.read_bytes())
    if keep is not None:
        kept = [l for l in net.layer if keep(l.name)]
        del net.layer[:]
        net.layer.extend(kept)
    dst.write_bytes(net.SerializeToString() + extra)
    return dst


def small_caffemodel(name, shape):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add()
    layer.name, layer.type = name, "Convolution"
    blob = layer.blobs.add()
    blob.shape.dim.extend(shape)
    blob.data.extend([0.5] * int(np.prod(shape)))
    return net.SerializeToString()


@pytest.mark.parametrize("case,rc,says", [
    ("cut", 2, "lacks 3 of the net's 9 layers with weights (fc6, fc7, score_fr)"),
    ("no-score", 2, "lacks 1 of the net's 9 layers with weights (score_fr)"),
    ("joined", 2, "layer fc6 appears twice"),
    ("no-upscore", 0, "has no upscore: filled with bilinear kernels"),
])
def test_weights_must_hold_every_learned_layer(case, rc, says, alexnet_weights, shared_data,
                                               tmp_path):
    w = tmp_path / "w.caffemodel"
    if case == "cut":            # cut after the convolutions
        edited_weights(alexnet_weights, w, keep=lambda n: n.startswith("conv"))
    elif case == "no-score":     # e.g. weights of another dataset's model, heads renamed
        edited_weights(alexnet_weights, w, keep=lambda n: n != "score_fr")
    elif case == "joined":       # two caffemodels joined with cat
        edited_weights(alexnet_weights, w, extra=small_caffemodel("fc6", [2, 2]))
    else:
        edited_weights(alexnet_weights, w, keep=lambda n: n != "upscore")
    r = run("infer.py", shared_data / "voc-demo/image.jpg", "--model", "voc-fcn-alexnet",
            "--weights", w, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == rc, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
    if rc:
        assert r.stderr.count("\n") == 1
    else:   # same segmentation as with the full weights, whose upscore is bilinear too
        full = run("infer.py", shared_data / "voc-demo/image.jpg", "--model", "voc-fcn-alexnet",
                   "--weights", alexnet_weights, "--out", tmp_path / "full", cwd=tmp_path)
        assert full.returncode == 0
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "o/image.png")),
                                      np.array(Image.open(tmp_path / "full/image.png")))


def test_infer_never_overwrites_an_input_nor_writes_one_output_twice(alexnet_weights,
                                                                    shared_data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(shared_data / "voc-demo/image.jpg").save(photos / "a.jpg")
    Image.open(shared_data / "voc-demo/image.jpg").save(photos / "a.png")
    before = (photos / "a.png").read_bytes()
    for args, says in [([photos / "a.jpg", photos / "a.png", "--out", tmp_path / "o"],
                        "would both be written to"),
                       ([photos / "a.png", "--out", photos], "would overwrite the input"),
                       ([photos / "a.jpg", "--out", photos / "a.jpg"], "is a file, not a folder"),
                       ([photos / "a.jpg", "--out", photos / "a.jpg/x"], "is under a file")]:
        r = run("infer.py", *args, "--model", "voc-fcn-alexnet", "--weights", alexnet_weights,
                cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
        assert not r.stdout                                    # refused before any work
    assert (photos / "a.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a.png"]


def test_reference_compare_exits_2_on_files_that_are_not_exports(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, **{"blob/x": np.ones(3, np.float32)})
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "strings.npz", **{"blob/x": np.array(["a", "b"])})
    import zipfile
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as z:
        z.writestr("blob/x.npy", "this is not an array")
    for bad, says in [("one.npy", "single array"), ("empty.npz", "not a reference .npz"),
                      ("strings.npz", "not numbers"), ("member.npz", "not a reference .npz")]:
        r = run("reference.py", "compare", good, tmp_path / bad, cwd=tmp_path)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and says in r.stderr, (bad, r.stderr)
    r = run("reference.py", "compare", good, good, "--rtol", "nan", cwd=tmp_path)
    assert r.returncode == 2 and "--rtol must be a finite number" in r.stderr


def test_reference_export_refuses_a_huge_image_before_decoding_it(alexnet_weights, tmp_path):
    huge = fake_png(tmp_path / "huge.png", 100000, 100000)
    t = __import__("time").time()
    r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", alexnet_weights, "--image",
            huge, "--out", tmp_path / "r.npz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "100000x100000" in r.stderr and "resize it" in r.stderr
    assert __import__("time").time() - t < 60 and not (tmp_path / "r.npz").exists()
    r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", alexnet_weights, "--image",
            huge, "--out", tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_no_output_replaces_a_file_the_project_did_not_write(alexnet_weights, shared_data,
                                                             tmp_path):
    """infer.py a/cat.jpg --out a overwrote an unrelated a/cat.png; reference.py export
    with --out the image or the weights replaced it. Refused before any work; the
    project's own outputs are replaced on a rerun."""
    a = tmp_path / "a"
    a.mkdir()
    Image.open(shared_data / "voc-demo/image.jpg").save(a / "cat.jpg")
    (a / "cat.png").write_bytes(b"my drawing of a cat")
    common = ["--model", "voc-fcn-alexnet", "--weights", alexnet_weights]
    r = run("infer.py", a / "cat.jpg", "--out", a, *common, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "was not written by this project" in r.stderr and not r.stdout
    assert (a / "cat.png").read_bytes() == b"my drawing of a cat"
    (a / "cat.png").unlink()
    for _ in range(2):                                  # its own outputs: replaced
        r = run("infer.py", a / "cat.jpg", "--out", a, *common, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert visual.written_by_us(a / "cat.png") and visual.written_by_us(a / "cat_overlay.jpg")

    image, weights = a / "cat.jpg", tmp_path / "w.caffemodel"
    weights.write_bytes(alexnet_weights.read_bytes())
    before = {p: p.read_bytes() for p in (image, weights)}
    for out in (image, weights, a / "cat.png"):
        r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", weights, "--image",
                image, "--out", out, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "would overwrite the input" in r.stderr or "not written by this" in r.stderr
    assert all(p.read_bytes() == b for p, b in before.items())


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(alexnet_weights, shared_data,
                                                            small_disk, tmp_path):
    disk = small_disk(8)
    r = run("infer.py", shared_data / "voc-demo/image.jpg", "--model", "voc-fcn-alexnet",
            "--weights", alexnet_weights, "--out", disk, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "the disk is full" in r.stderr and "Traceback" not in r.stderr
    for p in disk.iterdir():                         # what is there is whole
        assert p.stat().st_size > 0
        Image.open(p).load()                         # decodes to the end
    r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", alexnet_weights,
            "--image", shared_data / "voc-demo/image.jpg", "--out", disk / "r.npz",
            cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not enough disk space for the reference archive" in r.stderr
    assert not (disk / "r.npz").exists()


def test_reference_export_replaces_only_a_reference_archive(alexnet_weights, shared_data,
                                                            tmp_path):
    """export took any .npz whose meta named a model for its own: a port's archive
    holding a copy of a reference's meta was replaced. Only an archive laid out as
    export writes it (meta, input/, blob/, param/) is."""
    meta = {"model": "voc-fcn-alexnet", "weights_sha256": "0" * 64, "image_sha256": "0" * 64,
            "layers": [], "caffe": {}}
    np.savez(tmp_path / "port.npz", meta=np.array(json.dumps(meta)), score=np.ones((1, 2)))
    before = (tmp_path / "port.npz").read_bytes()
    r = run("reference.py", "export", "voc-fcn-alexnet", "--weights", alexnet_weights,
            "--image", shared_data / "photos/cat.bmp", "--out", "port.npz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "was not written by this project" in r.stderr
    assert (tmp_path / "port.npz").read_bytes() == before

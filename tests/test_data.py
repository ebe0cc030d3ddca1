"""Data layers, download/derive/check, on fixture datasets in the real formats and
on the real shared data."""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import caffe
from caffe import layers as L

import fixtures
import layers
import prepare
from conftest import REPO
from fcn import archives, cli, datasets, downloads, files, preparation, zoo
from fcn.datasets import DATASETS
from fcn.errors import DataError
from fcn.paths import SHARED_DATA
from loopback import RangeHandler, proxy_env, server, tar_of  # noqa: F401  (a fixture)

caffe.set_mode_cpu()


def test_every_dataset_has_its_module_and_its_data_layer():
    """docs/layout.md: a dataset is one module of fcn/datasets/ (registered in MODULES)
    and its data layer class in layers.py, written out under the name its prototxts use."""
    modules = {p.stem for p in (REPO / "fcn/datasets").glob("*.py")} - {
        "__init__", "base", "pascal"}
    assert {m.__name__.rsplit(".", 1)[1] for m in datasets.MODULES} == modules
    for name, ds in DATASETS.items():
        cls = getattr(layers, ds.layer)
        assert issubclass(cls, layers.SegDataLayer) and cls.dataset == name
        assert f"class {ds.layer}(SegDataLayer)" in (REPO / "layers.py").read_text()


def data_net(tmp_path, layer, params, ntop=2, phase=caffe.TEST, name="data.prototxt"):
    """A net holding only a data layer, as a real prototxt."""
    n = caffe.NetSpec()
    tops = L.Python(module="layers", layer=layer, ntop=ntop, param_str=json.dumps(params))
    for i, t in enumerate(tops if ntop > 1 else (tops,)):
        n[f"top{i}"] = t
    path = tmp_path / name
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), phase)


def tops_of(net):
    return [net.blobs[f"top{i}"].data.copy() for i in range(len(net.outputs))]


# ---------------------------------------------------------------------------
# Real data: the VOC demo pair and CamVid


def test_voc_demo_pair_through_the_voc_layer(shared_data, tmp_path):
    voc = tmp_path / "VOC"
    for sub, name, ext in (("JPEGImages", "image", "jpg"), ("SegmentationClass", "label", "png")):
        (voc / sub).mkdir(parents=True)
        (voc / sub / f"2007_000129.{ext}").symlink_to(shared_data / "voc-demo" / f"{name}.{ext}")
    fixtures.write_list(voc / "ImageSets/Segmentation/demo.txt", ["2007_000129"])
    net = data_net(tmp_path, "VOCSegDataLayer", {"dir": str(voc), "split": "demo"})
    net.forward()
    data, label = tops_of(net)

    rgb = np.array(Image.open(shared_data / "voc-demo/image.jpg"), dtype=np.float32)
    bgr = rgb[:, :, ::-1] - np.array([104.00699, 116.66877, 122.67892], np.float32)
    np.testing.assert_array_equal(data, bgr.transpose(2, 0, 1)[None])
    assert data.shape == (1, 3, 500, 334)
    want = np.array(Image.open(shared_data / "voc-demo/label.png"))
    np.testing.assert_array_equal(label, want[None, None].astype(np.float32))
    assert set(np.unique(label)) == {0, 2, 15, 255}


def test_camvid_pairs_through_the_camvid_layer(shared_data, tmp_path):
    camvid = shared_data / "camvid"
    net = data_net(tmp_path, "CamVidSegDataLayer", {"dir": str(camvid), "split": "train"})
    lines = (camvid / "train.txt").read_text().split()[0::2][:3]
    for line in lines:
        net.forward()
        data, label = tops_of(net)
        name = Path(line).name
        rgb = np.array(Image.open(camvid / "train" / name), dtype=np.float32)
        bgr = rgb[:, :, ::-1] - np.array(DATASETS["camvid"].mean, np.float32)
        np.testing.assert_array_equal(data[0], bgr.transpose(2, 0, 1))
        raw = np.array(Image.open(camvid / "trainannot" / name))
        np.testing.assert_array_equal(label[0, 0], np.where(raw == 11, 255, raw))
        assert data.shape == (1, 3, 360, 480) and label.max() <= 255


# ---------------------------------------------------------------------------
# Fixtures: derive, then every net of the zoo on them


@pytest.fixture
def fixture_root(fixture_data):
    return fixture_data


def test_derived_splits_and_labels(fixture_root):
    r = fixture_root
    # seg11valid = VOC2011 seg val minus SBD train (2008_000003 is in SBD train)
    assert (r / "pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt").read_text().split() == \
        ["2008_000004", "2008_000005"]
    assert (r / "nyud/trainval.txt").read_text().split() == ["5001", "5002", "5003"]
    seg = scipy.io.loadmat(r / "nyud/segmentation/img_5001.mat")["segmentation"]
    lab = np.array(Image.open(r / "nyud/labels40/img_5001.png"))
    np.testing.assert_array_equal(lab, np.where(seg == 0, 255, seg - 1))
    # SIFT Flow: test from the paper's list; trainval = the labelled rest
    assert (r / "sift-flow/test.txt").read_text().split() == ["forest_b1"]
    assert (r / "sift-flow/trainval.txt").read_text().split() == \
        ["coast_a1", "coast_a2", "street_c1"]
    # PASCAL-Context: full labels mapped onto the 59 task classes by name
    full, task = fixtures.context_label_lists()
    m = scipy.io.loadmat(r / "pascal-context/trainval/2008_000020.mat")["LabelMap"]
    got = np.array(Image.open(r / "pascal-context/labels59/2008_000020.png"))
    renames = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
    for full_idx in np.unique(m):
        name = full[full_idx - 1]
        want = next((k + 1 for k, t in enumerate(task) if renames.get(t, t) == name), 0)
        assert (got[m == full_idx] == want).all(), name
    assert (r / "pascal-context/train.txt").read_text().split() == ["2008_000020", "2008_000021"]


def test_readers_decode_the_raw_formats(fixture_root):
    r = fixture_root
    sbd = DATASETS["sbdd"].open(r)
    s = sbd.sample("2008_000010")
    seg = scipy.io.loadmat(r / "sbdd/dataset/cls/2008_000010.mat")["GTcls"][0][0]["Segmentation"]
    np.testing.assert_array_equal(s["label"][0], seg)
    sift = DATASETS["siftflow"].open(r).sample("coast_a1")
    geo = scipy.io.loadmat(r / f"sift-flow/GeoLabels/{fixtures.SUB}/coast_a1.mat")["S"]
    np.testing.assert_array_equal(sift["geo"][0], np.where(geo >= 1, geo - 1, 255))
    nyud = DATASETS["nyud"].open(r, {"tops": ["color", "depth", "hha", "label"]})
    s = nyud.sample("5001")
    depth = np.array(Image.open(r / "nyud/data/depth/img_5001.png"), dtype=np.float32)
    np.testing.assert_allclose(s["depth"][0], np.log(depth) - 7.844, atol=1e-5)
    hha = np.array(Image.open(r / "nyud/data/hha/img_5001.png"), dtype=np.float32)
    np.testing.assert_allclose(s["hha"], (hha - [132.431, 94.076, 118.477]).transpose(2, 0, 1),
                               atol=1e-4)


def every_data_net():
    for name, model in sorted(zoo.MODELS.items()):
        for fname, phase in zip(model.files, (caffe.TRAIN, caffe.TEST)):
            yield pytest.param(name, fname, phase, id=f"{name}/{fname}")


@pytest.mark.parametrize("name,fname,phase", list(every_data_net()))
def test_every_train_and_eval_net_runs_on_fixture_data(name, fname, phase, fixture_root,
                                                       monkeypatch):
    monkeypatch.setenv("FCN_DATA", str(fixture_root))
    net = caffe.Net(str(REPO / name / fname), phase)
    losses = [b for b in net.outputs if b.startswith("loss")]
    out = net.forward()
    net.backward()
    for b in losses:
        assert np.isfinite(out[b]) and out[b] > 0, (b, out[b])
    assert net.blobs["score" + zoo.MODELS[name].heads[0].suffix].data.shape[2:] == fixtures.SIZE
    score_fr = next(k for k in net.params if k.startswith("score_fr"))
    assert np.isfinite(net.params[score_fr][0].diff).all()


# ---------------------------------------------------------------------------
# Order: shuffled reproducibly in TRAIN, in file order in TEST


def first_images(net, n):
    out = []
    for _ in range(n):
        net.forward()
        out.append(net.blobs["top0"].data.copy())
    return out


def order_key(images):
    return [float(im.sum()) for im in images]


def test_shuffle_is_reproducible_per_seed_and_eval_follows_the_file(fixture_root, tmp_path):
    params = {"dir": str(fixture_root / "camvid"), "split": "train"}
    a = data_net(tmp_path, "CamVidSegDataLayer", {**params, "seed": 1}, phase=caffe.TRAIN)
    b = data_net(tmp_path, "CamVidSegDataLayer", {**params, "seed": 1}, phase=caffe.TRAIN)
    ka, kb = order_key(first_images(a, 12)), order_key(first_images(b, 12))
    assert ka == kb
    orders = {tuple(order_key(first_images(
        data_net(tmp_path, "CamVidSegDataLayer", {**params, "seed": s}, phase=caffe.TRAIN), 12)))
        for s in range(2, 7)}
    assert len(orders | {tuple(ka)}) > 1, "different seeds must give different orders"
    # every epoch visits every image once
    assert sorted(ka[:3]) == sorted(ka[3:6])

    ev = data_net(tmp_path, "CamVidSegDataLayer", params, phase=caffe.TEST)
    reader = DATASETS["camvid"].open(fixture_root)
    want = [float(reader.load(i, "data").sum()) for i in reader.ids("train")]
    assert order_key(first_images(ev, 6)) == want + want


# ---------------------------------------------------------------------------
# Bad input: one line, naming the file


def layer_error(tmp_path, layer, params, ntop=2):
    with pytest.raises(Exception) as e:
        net = data_net(tmp_path, layer, params, ntop)
        net.forward()
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_bad_param_str_is_one_line(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="layers", layer="VOCSegDataLayer", ntop=2,
                               param_str="{'dir': 'x', 'split': 'y'}")
    p = tmp_path / "n.prototxt"
    p.write_text(str(n.to_proto()))
    with pytest.raises(DataError, match="param_str is not JSON"):
        caffe.Net(str(p), caffe.TEST)
    assert "lacks split" in layer_error(tmp_path, "VOCSegDataLayer", {"dir": "x"})
    assert "unknown param_str keys mean" in layer_error(
        tmp_path, "VOCSegDataLayer", {"dir": "x", "split": "y", "mean": [1, 2, 3]})
    assert "tops must be chosen" in layer_error(
        tmp_path, "NYUDSegDataLayer", {"dir": "x", "split": "y", "tops": ["rgb"]}, 1)


def test_missing_root_split_or_image_names_the_path(fixture_root, tmp_path):
    msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(tmp_path / "nope"), "split": "val"})
    assert str(tmp_path / "nope") in msg and "JPEGImages" in msg
    voc = fixture_root / "pascal/VOC2011"
    msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(voc), "split": "test"})
    assert str(voc / "ImageSets/Segmentation/test.txt") in msg and "expected" in msg
    fixtures.write_list(voc / "ImageSets/Segmentation/ghost.txt", ["2099_000001"])
    msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(voc), "split": "ghost"})
    assert str(voc / "JPEGImages/2099_000001.jpg") in msg


def broken_voc(root):
    """A VOC folder with one of each problem, and one good image."""
    rng = np.random.default_rng(5)
    d = fixtures.make_voc(root, rng, train=(), val=("good", "small", "range", "trunc", "rgb"))
    fixtures.save_palette_png(d / "SegmentationClass/small.png", np.zeros((5, 5), np.uint8))
    fixtures.save_palette_png(d / "SegmentationClass/range.png",
                              np.full(fixtures.SIZE, 30, np.uint8))
    data = (d / "JPEGImages/trunc.jpg").read_bytes()
    (d / "JPEGImages/trunc.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", fixtures.SIZE[::-1]).save(d / "SegmentationClass/rgb.png")
    fixtures.write_list(d / "ImageSets/Segmentation/seg11valid.txt",
                        ["good", "small", "range", "trunc", "rgb", "missing"])
    return d


@pytest.mark.parametrize("bad,says", [
    ("small", "sizes differ"), ("range", "outside 0..20"), ("trunc", "unreadable image"),
    ("rgb", "is a RGB image")])
def test_bad_examples_raise_an_error_naming_the_file(bad, says, tmp_path):
    d = broken_voc(tmp_path)
    fixtures.write_list(d / "ImageSets/Segmentation/one.txt", [bad])
    msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(d), "split": "one"})
    assert says in msg and bad in msg


def test_check_reports_every_problem_at_once(tmp_path, capsys):
    broken_voc(tmp_path)
    rc = prepare.main(["check", "voc", "--data-root", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 1
    problems = [l for l in out.out.splitlines() if l.startswith("problem:")]
    for word in ("listed, the split has 736", "small", "range", "trunc", "rgb.png",
                 "missing"):
        assert any(word in p for p in problems), (word, problems)
    assert "1 complete" in out.out


def test_check_passes_on_the_shared_camvid(shared_data, capsys):
    rc = prepare.main(["check", "camvid", "--data-root", str(shared_data),
                       "--split", "train", "--split", "val"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "camvid train: 367 images, 367 complete" in out and "val: 101 images" in out


def test_unknown_dataset_is_one_line(capsys):
    assert cli.run(prepare.main, ["check", "kitti"], prog="prepare.py") == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---------------------------------------------------------------------------
# Download: a loopback server, never the network


def record(monkeypatch, tmp_path, table, algo="md5"):
    """Put {url: body} on record through $FCN_CHECKSUMS (size and one hash)."""
    import hashlib
    path = tmp_path / "checksums.json"
    path.write_text(json.dumps({u: {"size": len(b), algo: hashlib.new(algo, b).hexdigest()}
                                for u, b in table.items()}))
    monkeypatch.setenv("FCN_CHECKSUMS", str(path))


def test_get_downloads_resumes_verifies_unpacks_and_derives(server, tmp_path, capsys,
                                                           monkeypatch):
    httpd, url = server
    src = tmp_path / "src"
    rng = np.random.default_rng(1)
    fixtures.make_sbdd(src, rng)
    fixtures.make_voc(src, rng)
    RangeHandler.files = {"/benchmark.tgz": tar_of(src / "sbdd/dataset",
                                                    "benchmark_RELEASE/dataset"),
                          "/VOCtrainval_25-May-2011.tar": tar_of(src / "pascal/VOC2011",
                                                                 "TrainVal/VOCdevkit/VOC2011")}
    root = tmp_path / "root"
    # an interrupted earlier download: the first half of the VOC archive
    voc_tar = RangeHandler.files["/VOCtrainval_25-May-2011.tar"]
    (root / "downloads").mkdir(parents=True)
    (root / "downloads/VOCtrainval_25-May-2011.tar.part").write_bytes(voc_tar[:len(voc_tar) // 2])

    srcs = {d: [downloads.Source(f"{url}/{s.filename}", s.dest, s.strip)
                for s in DATASETS[d].sources] for d in ("sbdd", "voc")}
    record(monkeypatch, tmp_path, {s.url: RangeHandler.files["/" + s.filename]
                                   for d in srcs.values() for s in d})
    preparation.get("sbdd", root, srcs["sbdd"])
    preparation.get("voc", root, srcs["voc"])
    out = capsys.readouterr()
    assert RangeHandler.ranges == [f"bytes={len(voc_tar) // 2}-"]
    assert (root / "downloads/VOCtrainval_25-May-2011.tar").read_bytes() == voc_tar
    assert "resuming" in out.out and "size and md5 match the record" in out.out
    assert "%" in out.err                                   # the progress bar
    assert (root / "sbdd/dataset/cls/2008_000010.mat").is_file()
    assert (root / "pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt").read_text().split() \
        == ["2008_000004", "2008_000005"]
    # a second run downloads nothing and unpacks nothing
    preparation.get("voc", root, srcs["voc"])
    assert "already unpacked" in capsys.readouterr().out and len(RangeHandler.ranges) == 1


def test_download_with_a_wrong_checksum_is_refused(server, tmp_path, monkeypatch):
    httpd, url = server
    RangeHandler.files = {"/a.tar": b"x" * 1000}
    record(monkeypatch, tmp_path, {f"{url}/a.tar": b"y" * 1000})
    with pytest.raises(downloads.DownloadError, match="checksum mismatch for a.tar.* md5 "):
        downloads.download(f"{url}/a.tar", tmp_path / "a.tar")
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()


def test_a_download_with_nothing_on_record_needs_trust_and_prints_its_hash(server, tmp_path,
                                                                          capsys):
    import hashlib
    httpd, url = server
    body = b"new file" * 100
    RangeHandler.files = {"/new.bin": body}
    sha = hashlib.sha256(body).hexdigest()
    with pytest.raises(downloads.DownloadError, match=f"nothing on record .*{sha}.*"
                                                      "--trust-new-downloads"):
        downloads.download(f"{url}/new.bin", tmp_path / "new.bin")
    assert (tmp_path / "new.bin.part").read_bytes() == body       # kept, not fetched again
    assert not (tmp_path / "new.bin").exists()
    downloads.download(f"{url}/new.bin", tmp_path / "new.bin", trust_new=True)
    assert (tmp_path / "new.bin").read_bytes() == body
    assert f"size {len(body)}, sha256 {sha}" in capsys.readouterr().out
    downloads.download(f"{url}/new.bin", tmp_path / "new.bin")   # accepted before: kept


def test_every_url_carries_its_record():
    vgg = zoo.CLASSIFIERS["vgg16"]
    assert downloads.recorded(vgg.url, vgg.known).sha1 == \
        "9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24"
    for src in DATASETS["voc"].sources + DATASETS["sbdd"].sources:
        assert src.known.md5 and src.known.sha1 and src.known.source


@pytest.mark.parametrize("text", ["not json", '["a list"]', '{"http://x/a": {"sha512": "1"}}'])
def test_a_bad_checksums_file_is_one_line(text, tmp_path, monkeypatch):
    (tmp_path / "c.json").write_text(text)
    monkeypatch.setenv("FCN_CHECKSUMS", str(tmp_path / "c.json"))
    with pytest.raises(downloads.DownloadError, match=r"^\$FCN_CHECKSUMS .*c.json: "):
        downloads.recorded("http://x/a")


def test_download_failure_is_one_line(server, tmp_path):
    httpd, url = server
    with pytest.raises(downloads.DownloadError, match="HTTP 404"):
        downloads.download(f"{url}/missing.tar", tmp_path / "m.tar")


def test_unpack_refuses_members_outside_the_folder(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as t:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DataError, match="outside the archive"):
        archives.unpack(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


README_DIRS = {"voc": "pascal", "sbdd": "sbdd", "nyud": "nyud", "siftflow": "sift-flow",
               "pascalcontext": "pascal-context", "camvid": "camvid"}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_dataset_readme_names_its_sources_and_checksums(dataset):
    text = (REPO / "data" / README_DIRS[dataset] / "README.md").read_text()
    for src in DATASETS[dataset].sources:
        if src.archive:
            assert src.url in text, src.url
            if src.known.md5:
                assert src.known.md5 in text


def test_a_connection_closed_early_keeps_the_part_and_resumes(server, tmp_path, monkeypatch):
    """1 MB of a 3 MB file, then the server hangs up: nothing is renamed into place;
    the next run resumes from the part and checks the whole."""
    httpd, url = server
    body = np.random.default_rng(0).bytes(3 << 20)
    RangeHandler.files = {"/big.tar": body}
    RangeHandler.cut = {"/big.tar": 1 << 20}
    record(monkeypatch, tmp_path, {f"{url}/big.tar": body}, "sha256")
    with pytest.raises(downloads.DownloadError,
                       match="stopped at 1.0 of 3.1 MB; run again to resume"):
        downloads.download(f"{url}/big.tar", tmp_path / "big.tar")
    assert not (tmp_path / "big.tar").exists()
    assert (tmp_path / "big.tar.part").stat().st_size == 1 << 20
    downloads.download(f"{url}/big.tar", tmp_path / "big.tar")
    assert (tmp_path / "big.tar").read_bytes() == body
    assert RangeHandler.ranges == [f"bytes={1 << 20}-"]


def test_a_damaged_archive_is_one_line_removed_and_never_stamped(tmp_path):
    src = tmp_path / "src"
    fixtures.make_voc(src, np.random.default_rng(2))
    good = tar_of(src / "pascal/VOC2011", "VOC2011")
    # a corrupt gzip stream (zlib.error when read)
    bad_gz = tmp_path / "a.tar.gz"
    bad_gz.write_bytes(good[:200] + bytes(b ^ 0x5A for b in good[200:400]) + good[400:])
    # a tar whose third member's header is garbage (tarfile stops there, silently)
    raw = gzip.decompress(good)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        third = t.getmembers()[2].offset
    bad_hdr = tmp_path / "b.tar.gz"
    bad_hdr.write_bytes(gzip.compress(raw[:third] + b"\x07" * 512 + raw[third + 512:]))
    for archive in (bad_gz, bad_hdr):
        dest = tmp_path / f"out-{archive.name}"
        with pytest.raises(DataError, match="is damaged .*run again to download it"):
            archives.unpack(archive, dest, "VOC2011/")
        assert not archive.exists()                              # downloaded again next run
        assert not list(dest.glob(".unpacked-*"))                # never marked complete


def test_prepare_exits_2_with_one_line_on_user_mistakes(server, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "prepare.py"), *map(str, args)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    (tmp_path / "file").write_text("x")
    for args, says in [(["check", "kitti"], "unknown dataset 'kitti'"),
                       (["get", "camvid", "--data-root", tmp_path / "file"], "is a file, not a folder"),
                       (["derive", "voc", "--data-root", tmp_path / "file/sub"], "is under a file"),
                       (["derive", "voc", "--data-root", tmp_path / "empty"], "not found")]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args,says", [
    (["get", "weights"], "use 'prepare.py get weights NAME...'; names: vgg16, caffenet, voc-fcn32s"),
    (["check", "weights", "vgg16"], "use 'prepare.py get weights NAME...'"),
    (["get", "weights", "vgg16", "nyud-fcn32s-color-d"],
     "'nyud-fcn32s-color-d' has no released weights; weights: vgg16"),
    (["get", "weights", "kitti-fcn8s"], "is neither a model nor a classifier"),
])
def test_get_weights_mistakes_are_one_line_before_any_download(args, says, tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "prepare.py"), *args], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "http_proxy": "http://127.0.0.1:9"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert not (REPO / "ilsvrc-nets/VGG_ILSVRC_16_layers.caffemodel.part").exists()


def test_ids_that_leave_the_dataset_folder_are_refused(fixture_root, tmp_path):
    voc = fixture_root / "pascal/VOC2011"
    for bad in ("../../../etc/passwd", "/etc/passwd", "a/../../b"):
        fixtures.write_list(voc / "ImageSets/Segmentation/evil.txt", ["2008_000001", bad])
        msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(voc), "split": "evil"})
        assert "line 2" in msg and "points outside the dataset folder" in msg, msg


def test_images_claiming_huge_sizes_are_refused_from_their_header(fixture_root, tmp_path):
    """A PNG whose header claims 100000 x 100000 pixels, as an image or as a label:
    one line, before any pixel is decoded (PIL's bomb check raised a traceback)."""
    from fixtures import fake_png
    d = fixtures.make_voc(tmp_path, np.random.default_rng(4), train=(), val=("a", "b"))
    fake_png(d / "SegmentationClass/a.png", 100000, 100000)
    (d / "JPEGImages/b.jpg").unlink()
    fake_png(d / "JPEGImages/b.png", 100000, 100000)
    (d / "JPEGImages/b.png").rename(d / "JPEGImages/b.jpg")
    for i in ("a", "b"):
        fixtures.write_list(d / "ImageSets/Segmentation/one.txt", [i])
        t = time.time()
        msg = layer_error(tmp_path, "VOCSegDataLayer", {"dir": str(d), "split": "one"})
        assert "100000x100000" in msg and "resize it" in msg and time.time() - t < 10, msg
    fixtures.write_list(d / "ImageSets/Segmentation/seg11valid.txt", ["a", "b"])
    r = subprocess.run([sys.executable, str(REPO / "prepare.py"), "check", "voc", "--data-root",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.count("100000x100000") == 2


# ---------------------------------------------------------------------------
# Where the data is: the data root rule, relative paths, the environment


def test_a_data_root_holds_a_dataset_when_its_split_lists_are_there(shared_data, tmp_path):
    """data/camvid/ in the repo holds a README only: a folder of that name is not the
    dataset, and the shared data beside the repo is used when it has the lists."""
    assert (REPO / "data/camvid").is_dir()
    assert datasets.holds(shared_data, [("camvid", "train"), ("camvid", "val"), "squeezenet"])
    assert not datasets.holds(REPO / "data", [("camvid", "train")])
    assert not datasets.holds(shared_data, [("camvid", "test")])          # not there on purpose
    if not datasets.holds(REPO / "data", [("camvid", "val")]):
        assert datasets.data_root(needs=[("camvid", "val")]) == SHARED_DATA.resolve() \
            or datasets.data_root(needs=[("camvid", "val")]) == SHARED_DATA
    assert datasets.data_root(needs=[("voc", "seg11valid")]) == REPO / "data"  # holds none: data/


def test_relative_data_roots_are_relative_to_the_working_directory(shared_data, tmp_path):
    (tmp_path / "here").symlink_to(shared_data, target_is_directory=True)
    r = subprocess.run([sys.executable, str(REPO / "prepare.py"), "check", "camvid", "--split",
                        "val", "--data-root", "here"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env={**os.environ, "FCN_DATA": "here"})
    assert r.returncode == 0 and "camvid: complete" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, str(REPO / "prepare.py"), "check", "camvid", "--split",
                        "val"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "FCN_DATA": "here"})
    assert r.returncode == 0 and "camvid: complete" in r.stdout, r.stdout + r.stderr


PREPARE, INFER, SOLVE = ["prepare.py", "check", "camvid"], ["infer.py", "x.jpg"], \
    ["voc-fcn8s/solve.py", "--iters", "1"]


@pytest.mark.parametrize("command,var,value,says", [
    (PREPARE, "FCN_DATA", "", "$FCN_DATA is set to ''"),
    (SOLVE, "FCN_DATA", "/proc/version", "is a file, not a folder"),
    (INFER, "FCN_MAX_MEMORY_GB", "lots", "$FCN_MAX_MEMORY_GB is 'lots'; it must be a number "
                                         "above 0"),
    (INFER, "FCN_MAX_MEMORY_GB", "nan", "must be a number above 0"),
    (PREPARE, "FCN_MAX_MEMORY_GB", "0", "must be a number above 0"),
    (SOLVE, "FCN_MAX_MEMORY_GB", "-4", "must be a number above 0"),
    (INFER, "CAFFE_WINOGRAD", "off", "$CAFFE_WINOGRAD is 'off'; it must be 0 or 1"),
    (INFER, "CAFFE_CPU_ISA", "sse", "$CAFFE_CPU_ISA is 'sse'; it must be avx512 or avx2 or "
                                    "plain"),
])
def test_every_variable_is_checked_before_any_work(command, var, value, says, tmp_path):
    r = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, var: value})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_a_tiny_memory_limit_is_said_as_such(alexnet_weights, shared_data, tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "infer.py"),
                        shared_data / "voc-demo/image.jpg", "--model", "voc-fcn-alexnet",
                        "--weights", alexnet_weights, "--out", tmp_path],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FCN_MAX_MEMORY_GB": "1e-9"})
    assert r.returncode == 2 and "for the smallest image" in r.stderr, r.stderr
    assert "1 px" not in r.stderr


# ---------------------------------------------------------------------------
# Downloads: the record of checksums, and parts of earlier downloads


def test_recorded_checksums_are_normalised(server, tmp_path, monkeypatch):
    """An upper-case sha256 and a size given as a string are the same values: the right
    file is accepted (they were compared as given, and the file deleted every run)."""
    import hashlib
    httpd, url = server
    body = b"the right file" * 50
    RangeHandler.files = {"/f.bin": body}
    (tmp_path / "c.json").write_text(json.dumps({f"{url}/f.bin": {
        "size": str(len(body)), "sha256": hashlib.sha256(body).hexdigest().upper()}}))
    monkeypatch.setenv("FCN_CHECKSUMS", str(tmp_path / "c.json"))
    downloads.download(f"{url}/f.bin", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == body


@pytest.mark.parametrize("entry,says", [
    ({"size": "big"}, "size 'big' is not a number of bytes"),
    ({"size": -3}, "is not a number of bytes"),
    ({"sha256": "abc"}, "sha256 'abc' is not 64 hex digits"),
    ({"md5": 5}, "md5 5 is not 32 hex digits"),
    ({"source": "me"}, "each entry must be an object"),
    ("text", "each entry must be an object"),
])
def test_a_bad_checksum_record_stops_before_any_download(entry, says, server, tmp_path):
    httpd, url = server
    RangeHandler.files = {"/benchmark.tgz": b"x" * 100}
    (tmp_path / "c.json").write_text(json.dumps({DATASETS["sbdd"].sources[0].url: entry}))
    env = {**os.environ, **proxy_env(url), "FCN_CHECKSUMS": str(tmp_path / "c.json")}
    for command in (["prepare.py", "get", "sbdd", "--data-root", tmp_path / "data"],
                    ["reproduce.py", "voc", "--dry-run", "--out", tmp_path / "out"]):
        r = subprocess.run([sys.executable, str(REPO / command[0]), *map(str, command[1:])],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert RangeHandler.ranges == [] and not (tmp_path / "data/downloads").exists()


def test_a_stale_part_with_nothing_on_record_is_not_continued(server, tmp_path, capsys):
    """The part of an earlier download of another file: appending the new file's tail
    to it gave a file that is neither, and its hash was printed to be recorded."""
    import hashlib
    httpd, url = server
    old, new = b"A" * 3000, b"B" * 5000
    RangeHandler.files = {"/f.bin": old}
    RangeHandler.cut = {"/f.bin": 1000}
    with pytest.raises(downloads.DownloadError, match="stopped at"):
        downloads.download(f"{url}/f.bin", tmp_path / "f.bin", trust_new=True)
    RangeHandler.files, RangeHandler.cut = {"/f.bin": new}, {}      # the file changed since
    downloads.download(f"{url}/f.bin", tmp_path / "f.bin", trust_new=True)
    assert (tmp_path / "f.bin").read_bytes() == new
    assert hashlib.sha256(new).hexdigest() in capsys.readouterr().out
    # a part without a validator (an older run's) is started over too
    (tmp_path / "g.bin.part").write_bytes(b"A" * 1000)
    RangeHandler.files = {"/g.bin": new}
    downloads.download(f"{url}/g.bin", tmp_path / "g.bin", trust_new=True)
    assert (tmp_path / "g.bin").read_bytes() == new
    assert "starting over" in capsys.readouterr().out


def test_an_unchanged_file_resumes_from_its_part_with_nothing_on_record(server, tmp_path):
    httpd, url = server
    body = np.random.default_rng(2).bytes(200000)
    RangeHandler.files, RangeHandler.cut = {"/f.bin": body}, {"/f.bin": 50000}
    with pytest.raises(downloads.DownloadError, match="stopped at"):
        downloads.download(f"{url}/f.bin", tmp_path / "f.bin", trust_new=True)
    RangeHandler.cut = {}
    downloads.download(f"{url}/f.bin", tmp_path / "f.bin", trust_new=True)
    assert RangeHandler.ranges == ["bytes=50000-"]
    assert (tmp_path / "f.bin").read_bytes() == body


def test_no_url_points_at_a_moving_branch():
    urls = [s.url for d in DATASETS.values() for s in d.sources] + \
        [m.caffemodel_url for m in zoo.MODELS.values() if m.caffemodel_url] + \
        [c.url for c in zoo.CLASSIFIERS.values() if c.url]
    for u in urls:
        assert "/master" not in u and "refs/heads" not in u, u
    assert downloads.RELEASE_COMMIT.startswith("1305c73") and len(downloads.RELEASE_COMMIT) == 40
    assert DATASETS["sbdd"].sources[0].known.size == 1419539633


# ---------------------------------------------------------------------------
# One run at a time


def test_a_data_root_in_use_is_one_line_naming_the_process(tmp_path):
    with files.locked(tmp_path, "--data-root"):
        r = subprocess.run([sys.executable, str(REPO / "prepare.py"), "get", "camvid",
                            "--data-root", tmp_path], capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"is in use by process {os.getpid()}" in r.stderr and "pytest" in r.stderr
    assert not (tmp_path / "downloads").exists()

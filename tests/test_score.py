"""score.py: the metrics against hand-computed confusion matrices, scoring real
nets on fixture data (one and two heads), and the CLI."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe import layers as L

from fcn import metrics, zoo
from fcn.datasets import DATASETS
from fcn.images import index_png
from conftest import REPO

caffe.set_mode_cpu()


def test_fast_hist_counts_gt_rows_pred_columns_and_skips_ignore():
    label = np.array([0, 0, 1, 1, 2, 255, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2])
    np.testing.assert_array_equal(metrics.fast_hist(label, pred, 3),
                                  [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_metrics_by_hand():
    hist = np.array([[3, 1, 0],
                     [0, 2, 0],
                     [1, 0, 1]])
    m = metrics.metrics(hist)
    # total 8, correct 6; per-class accuracy 3/4, 2/2, 1/2
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)
    assert m["mean_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    # IU = tp / (gt + pred - tp): 3/(4+4-3), 2/(2+3-2), 1/(2+1-1)
    iu = [3 / 5, 2 / 3, 1 / 2]
    assert m["per_class_iu"] == pytest.approx(iu)
    assert m["mean_iu"] == pytest.approx(np.mean(iu))
    assert m["fw_iu"] == pytest.approx(4 / 8 * iu[0] + 2 / 8 * iu[1] + 2 / 8 * iu[2])


def test_classes_absent_from_the_split_are_left_out():
    # class 2 never occurs in the ground truth, though it is predicted once
    hist = np.array([[2, 0, 1],
                     [0, 3, 0],
                     [0, 0, 0]])
    m = metrics.metrics(hist)
    assert math.isnan(m["per_class_iu"][2])
    assert m["mean_iu"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert json.loads(json.dumps(metrics.json_safe(m)))["per_class_iu"][2] is None
    empty = metrics.metrics(np.zeros((3, 3)))
    assert all(math.isnan(empty[k]) for k in metrics.METRIC_KEYS)


def test_score_net_two_heads_on_siftflow_fixture(fixture_data, tmp_path, monkeypatch):
    """SIFT Flow's layer and two 1x1 score heads: one histogram per head."""
    n = caffe.NetSpec()
    n.data, n.sem, n.geo = L.Python(module="layers", layer="SIFTFlowSegDataLayer", ntop=3,
                                    param_str=json.dumps({"dir": "sift-flow", "split": "trainval"}))
    n.score_sem = L.Convolution(n.data, kernel_size=1, num_output=33,
                                weight_filler=dict(type="gaussian", std=1))
    n.score_geo = L.Convolution(n.data, kernel_size=1, num_output=3,
                                weight_filler=dict(type="gaussian", std=1))
    path = tmp_path / "two.prototxt"
    path.write_text(str(n.to_proto()))
    monkeypatch.setenv("FCN_DATA", str(fixture_data))
    net = caffe.Net(str(path), caffe.TEST)
    model = zoo.MODELS["siftflow-fcn32s"]           # its heads: score_sem/sem, score_geo/geo
    results, loss = metrics.score_net(net, model, 3, save_dir=tmp_path / "pred")
    assert loss is None
    # each head's metrics are those of its saved predictions against the raw labels
    reader = DATASETS["siftflow"].open(fixture_data)
    for label, c, sfx in [("sem", 33, "_sem"), ("geo", 3, "_geo")]:
        hist = sum(metrics.fast_hist(reader.raw(i, label),
                                     index_png(tmp_path / "pred" / f"{i}{sfx}.png"), c)
                   for i in reader.ids("trainval"))
        assert hist.sum() > 0
        expected = metrics.metrics(hist)
        for k in metrics.METRIC_KEYS:
            assert results[label][k] == pytest.approx(expected[k], rel=1e-12)
        np.testing.assert_allclose(results[label]["per_class_iu"], expected["per_class_iu"],
                                   rtol=1e-12)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(
        f"{i}{sfx}.png" for i in ("coast_a1", "coast_a2", "street_c1") for sfx in ("_sem", "_geo"))


def run_score(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "score.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "GLOG_minloglevel": "2"})


def test_score_cli_json_and_predictions(fixture_data, alexnet_weights, tmp_path):
    r = run_score("voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root", fixture_data,
                  "--save-dir", tmp_path / "pred", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "per_class_iu",
            "n_images"} <= set(out)
    assert out["n_images"] == 2 and out["split"] == "seg11valid"
    assert len(out["per_class_iu"]) == 21
    pred = Image.open(tmp_path / "pred/2008_000004.png")
    assert pred.mode == "P" and pred.size == (28, 20)

    r = run_score(REPO / "voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root",
                  fixture_data, "--split", "val", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "voc-fcn-alexnet on val (3 images" in r.stdout and "mean IU" in r.stdout


@pytest.mark.parametrize("args,says", [
    (["voc-fcn99s", "--weights", "x"], "unknown model 'voc-fcn99s'"),
    (["voc-fcn-alexnet", "--weights", "/nope.caffemodel"], "weights file not found"),
    (["voc-fcn8s", "--weights", "ALEX"], "does not fit the net"),
    (["voc-fcn-alexnet", "--weights", "ALEX", "--split", "nosuch"], "split list not found"),
    (["voc-fcn-alexnet", "--weights", "ALEX", "--save-dir", "ALEX"], "is a file, not a folder"),
    (["voc-fcn-alexnet", "--weights", "ALEX", "--save-dir", "/proc/version/x"],
     "is under a file"),
])
def test_score_cli_bad_input_is_one_line(args, says, fixture_data, alexnet_weights, tmp_path):
    args = [str(alexnet_weights) if a == "ALEX" else a for a in args]
    r = run_score(*args, "--data-root", fixture_data, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_predictions_never_go_over_the_ground_truth(fixture_data, alexnet_weights, tmp_path):
    """--save-dir pointed at the dataset's label folder overwrote the ground truth (the
    next score was 100.00 mean IU)."""
    labels = fixture_data / "pascal/VOC2011/SegmentationClass"
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    r = run_score("voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root", fixture_data,
                  "--save-dir", labels, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is inside the dataset folder" in r.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/2008_000004.png").write_bytes(labels.joinpath("2008_000004.png")
                                                     .read_bytes())
    r = run_score("voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root", fixture_data,
                  "--save-dir", tmp_path / "mine", cwd=tmp_path)
    assert r.returncode == 2 and "2008_000004.png exists and was not written" in r.stderr
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before


def test_a_full_disk_under_save_dir_is_one_line(fixture_data, alexnet_weights, small_disk,
                                                tmp_path):
    disk = small_disk(4)
    (disk / "pad").write_bytes(b"x" * 3000)          # leaves room for about one PNG
    r = run_score("voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root", fixture_data,
                  "--save-dir", disk, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "the disk is full" in r.stderr
    assert all(p.stat().st_size > 0 for p in disk.iterdir())


def test_save_dir_is_never_the_data_root_nor_a_folder_above_it(fixture_data, alexnet_weights,
                                                               tmp_path):
    """--save-dir ../shared/data (the data root itself) wrote the predictions among the
    datasets; only the dataset's own folders were refused."""
    root = tmp_path / "above/data"
    shutil.copytree(fixture_data / "pascal", root / "pascal")
    before = sorted(p for p in tmp_path.rglob("*"))
    for save_dir in (root, tmp_path / "above", tmp_path / "above/data/../../above"):
        r = run_score("voc-fcn-alexnet", "--weights", alexnet_weights, "--data-root", root,
                      "--save-dir", save_dir, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "holds the data root" in r.stderr and not r.stdout
    assert sorted(p for p in tmp_path.rglob("*")) == before

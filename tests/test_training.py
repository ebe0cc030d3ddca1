"""solve.py: training with scoring, logs, plot, atomic snapshots, resume, Ctrl-C,
and one-line errors; on voc-fcn-alexnet and the fixture VOC/SBD data."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import caffe

import caffemodel
from conftest import REPO

SOLVE = REPO / "voc-fcn-alexnet/solve.py"


def solve(*args, cwd, model="voc-fcn-alexnet", timeout=600):
    return subprocess.run([sys.executable, str(REPO / model / "solve.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "GLOG_minloglevel": "2"})


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(fixture_data, alexnet_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = solve("--weights", alexnet_weights, "--iters", 4, "--test-interval", 2, "--display", 1,
              "--data-root", fixture_data, "--out", out, cwd=out)
    return out, r


def test_training_scores_logs_plots_and_snapshots(trained):
    out, r = trained
    assert r.returncode == 0, r.stderr
    progress = [l for l in r.stdout.splitlines() if l.startswith("iter ") and "it/s" in l]
    assert len(progress) == 4 and "loss" in progress[0] and "ETA" in progress[0]
    scored = [l for l in r.stdout.splitlines() if "seg11valid: pixel acc" in l]
    assert len(scored) == 2 and "mean IU" in scored[0]
    records = lines(out / "metrics.jsonl")
    assert [m["iter"] for m in records] == [2, 4]
    assert all(m["n_images"] == 2 and 0 <= m["mean_iu"] <= 1 for m in records)
    assert [l["iter"] for l in lines(out / "train_log.jsonl")] == [1, 2, 3, 4]
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["train_iter_2.caffemodel", "train_iter_2.solverstate",
                     "train_iter_4.caffemodel", "train_iter_4.solverstate"]
    assert not list((out / ".snapshot-tmp").iterdir())
    net = caffe.Net(str(REPO / "voc-fcn-alexnet/deploy.prototxt"), caffe.TEST)
    assert "score_fr" in caffemodel.check_fits(out / "final.caffemodel", net)


def test_resume_continues_at_the_snapshot(trained, fixture_data):
    out, _ = trained
    r = solve("--resume", out / "snapshots/train_iter_2.solverstate", "--iters", 3,
              "--test-interval", 3, "--data-root", fixture_data, "--out", out, cwd=out)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "at iteration 2" in r.stdout
    assert [m["iter"] for m in lines(out / "metrics.jsonl")] == [2, 4, 3]


def test_ctrl_c_writes_a_snapshot_and_exits(fixture_data, alexnet_weights, tmp_path):
    p = subprocess.Popen([sys.executable, str(SOLVE), "--weights", str(alexnet_weights),
                          "--iters", "1000", "--display", "1", "--data-root", str(fixture_data),
                          "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path, env={**os.environ, "GLOG_minloglevel": "2"})
    deadline = time.time() + 300
    for line in p.stdout:                 # wait for the first finished iteration
        if line.startswith("iter 1/1000") or time.time() > deadline:
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "stopped at iteration" in err and "--resume" in err
    it = int(err.split("stopped at iteration ")[1].split(";")[0])
    assert (tmp_path / f"snapshots/train_iter_{it}.solverstate").is_file()
    assert (tmp_path / f"snapshots/train_iter_{it}.caffemodel").is_file()


@pytest.mark.parametrize("model,args,says", [
    ("voc-fcn16s", [], "train voc-fcn32s first"),
    ("voc-fcn32s", [], "python surgery.py vgg16"),
    ("nyud-fcn32s-color-hha", [], "missing initial weights for the nyud-fcn32s-color stream"),
    ("voc-fcn-alexnet", ["--gpu", "0"], "CPU-only"),
    ("voc-fcn-alexnet", ["--weights", "/nope.caffemodel"], "weights file not found"),
    ("voc-fcn-alexnet", ["--iters", "0"], "--iters must be at least 1"),
    ("voc-fcn-alexnet", ["--resume", "/nope.solverstate"], "not found"),
])
def test_solve_errors_are_one_line(model, args, says, tmp_path):
    r = solve(*args, "--out", tmp_path / "o", cwd=tmp_path, model=model)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr

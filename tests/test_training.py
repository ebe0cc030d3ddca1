"""solve.py: training with scoring, logs, plot, atomic snapshots, resume, Ctrl-C,
and one-line errors; on voc-fcn-alexnet and the fixture VOC/SBD data."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import caffe
from caffe.proto import caffe_pb2

from fcn import train as training
from fcn import caffemodel, files, snapshots
from fcn.device import build_info
from conftest import REPO

SOLVE = REPO / "voc-fcn-alexnet/solve.py"
CUDA = bool(build_info().get("cuda"))


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
    assert "score_fr" in caffemodel.check_fits(out / "final.caffemodel", net, complete=True)[0]


def test_resume_continues_at_the_snapshot(trained, fixture_data, tmp_path):
    """Resuming at iteration 2 replaces what the earlier run logged after it: a run
    killed between a scoring and its snapshot leaves no duplicate record. (A copy of
    the run folder, resumed as it is: its states name their weights relative to
    themselves.)"""
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    state = out / "snapshots/train_iter_2.solverstate"
    # a kill in the middle of an append, NUL bytes after a crash: every resume was a
    # JSONDecodeError traceback; the damaged tail goes, with a note
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iter": 6, "mean_')
    with open(out / "train_log.jsonl", "ab") as f:
        f.write(b"\0" * 64)
    r = solve("--resume", state, "--iters", 4, "--test-interval", 2, "--display", 1,
              "--data-root", fixture_data, "--out", out, cwd=out)
    assert r.returncode == 0, r.stderr
    assert "metrics.jsonl: dropped 1 damaged line(s)" in r.stdout
    assert "train_log.jsonl: dropped 1 damaged line(s)" in r.stdout
    assert "resumed from" in r.stdout and "at iteration 2" in r.stdout
    assert "3 log records after it replaced" in r.stdout
    assert [m["iter"] for m in lines(out / "metrics.jsonl")] == [2, 4]
    assert [m["iter"] for m in lines(out / "train_log.jsonl")] == [1, 2, 3, 4]


def rewrite_state(path, out=None, learned_net=None, keep_history=None, reshape=None):
    """A copy of a real .solverstate with one thing changed."""
    s = caffe_pb2.SolverState()
    s.ParseFromString(path.read_bytes())
    if learned_net is not None:
        s.learned_net = learned_net
    if keep_history is not None:
        del s.history[keep_history:]
    if reshape is not None:
        s.history[reshape].shape.dim[0] += 1
    (out or path).write_bytes(s.SerializeToString())
    return out or path


@pytest.mark.parametrize("case,says", [
    ("empty", "is not a complete Caffe .solverstate (0 bytes"),
    ("text", "is not a Caffe .solverstate"),
    ("fewer", "has 10 history blobs, voc-fcn-alexnet's net has 17 parameter blobs"),
    ("shape", "it is a state of another model"),
    ("truncated", "is truncated or not a caffemodel"),
    ("other-net", "lacks"),
    ("missing-net", "which is missing"),
])
def test_resume_refuses_states_caffe_would_abort_on(case, says, trained, fixture_data,
                                                    tmp_path):
    """Each of these made Caffe abort (exit 134) in solver.restore."""
    snaps = trained[0] / "snapshots"
    state, weights = snaps / "train_iter_4.solverstate", snaps / "train_iter_4.caffemodel"
    bad = tmp_path / "bad.solverstate"
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("this is not a solver state\n" * 20)
    elif case == "fewer":       # (a copy elsewhere: its weights named by their full path)
        rewrite_state(state, bad, keep_history=10, learned_net=str(weights))
    elif case == "shape":
        rewrite_state(state, bad, reshape=3, learned_net=str(weights))
    elif case == "truncated":
        cut = tmp_path / "cut.caffemodel"
        cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        rewrite_state(state, bad, learned_net=str(cut))
    elif case == "other-net":
        # the weights of a net that shares only its first layers (AlexNet's conv1..fc7)
        full = caffe_pb2.NetParameter()
        full.ParseFromString(weights.read_bytes())
        part = caffe_pb2.NetParameter()
        part.layer.extend(l for l in full.layer if l.name.startswith(("conv", "fc")))
        (tmp_path / "part.caffemodel").write_bytes(part.SerializeToString())
        rewrite_state(state, bad, learned_net=str(tmp_path / "part.caffemodel"))
    elif case == "missing-net":
        rewrite_state(state, bad, learned_net=str(tmp_path / "gone.caffemodel"))
    r = solve("--resume", bad, "--iters", 6, "--data-root", fixture_data, "--out",
              tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


@pytest.mark.parametrize("flag,value", [("--base-lr", "nan"), ("--base-lr", "inf"),
                                        ("--time-budget", "nan"), ("--momentum", "nan"),
                                        ("--time-budget", "-inf")])
def test_non_finite_numbers_are_refused(flag, value, tmp_path):
    r = solve(f"{flag}={value}", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{flag} must be a finite number" in r.stderr


def test_a_diverging_loss_stops_and_keeps_the_last_finite_snapshot(fixture_data,
                                                                  alexnet_weights, tmp_path):
    r = solve("--weights", alexnet_weights, "--base-lr", "1e30", "--iters", 20,
              "--test-interval", 1, "--data-root", fixture_data, "--out", tmp_path, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "the training loss became" in err[0], r.stderr
    it = int(err[0].split("at iteration ")[1].split(";")[0])
    snaps = sorted(p.name for p in (tmp_path / "snapshots").glob("*.solverstate"))
    assert snaps and f"train_iter_{it}.solverstate" not in snaps      # nothing non-finite kept
    assert f"train_iter_{it - 1}.solverstate" in err[0]
    assert not (tmp_path / "final.caffemodel").exists()
    m = lines(tmp_path / "metrics.jsonl")
    assert m[-1]["iter"] == it - 1


def test_a_bad_evaluation_image_stops_with_a_snapshot(fixture_data, alexnet_weights, tmp_path):
    """The first scoring meets an unreadable image: the iterations before it are kept."""
    data = tmp_path / "data"
    shutil.copytree(fixture_data / "pascal", data / "pascal")
    shutil.copytree(fixture_data / "sbdd", data / "sbdd")
    bad = data / "pascal/VOC2011/JPEGImages/2008_000005.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    r = solve("--weights", alexnet_weights, "--iters", 4, "--test-interval", 2, "--data-root",
              data, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "2008_000005.jpg" in err[0] and "--resume" in err[0], r.stderr
    assert (tmp_path / "o/snapshots/train_iter_2.solverstate").is_file()
    assert (tmp_path / "o/snapshots/train_iter_2.caffemodel").is_file()


def test_progress_shows_the_time_budget_that_ends_the_run(fixture_data, alexnet_weights,
                                                          tmp_path):
    r = solve("--weights", alexnet_weights, "--time-budget", 0.05, "--display", 1,
              "--test-interval", 1000, "--data-root", fixture_data, "--out", tmp_path,
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    progress = [l for l in r.stdout.splitlines() if l.startswith("iter ") and "it/s" in l]
    assert progress and all("budget" in l and "/100000" not in l for l in progress), progress
    assert "time budget of 0.05 minutes reached" in r.stdout


def test_pruning_removes_weights_left_without_their_state(trained, tmp_path):
    """A SIGKILL between the two renames of a snapshot leaves weights without a
    state; the next snapshot's pruning removes them, and keeps the complete ones."""
    snaps = tmp_path / "snapshots"
    shutil.copytree(trained[0] / "snapshots", snaps)
    shutil.copyfile(snaps / "train_iter_2.caffemodel", snaps / "train_iter_3.caffemodel")
    shutil.copyfile(snaps / "train_iter_4.caffemodel", snaps / "train_iter_5.caffemodel")
    snapshots.prune(snaps, keep=1)
    assert sorted(p.name for p in snaps.iterdir()) == [
        "train_iter_4.caffemodel", "train_iter_4.solverstate",
        "train_iter_5.caffemodel"]          # newer than the last complete one: maybe in flight
    assert snapshots.last_snapshot(tmp_path) == snaps / "train_iter_4.solverstate"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_a_snapshot_and_exits(sig, fixture_data, alexnet_weights,
                                                       tmp_path):
    p = subprocess.Popen([sys.executable, str(SOLVE), "--weights", str(alexnet_weights),
                          "--iters", "1000", "--display", "1", "--data-root", str(fixture_data),
                          "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path, env={**os.environ, "GLOG_minloglevel": "2"})
    deadline = time.time() + 300
    for line in p.stdout:                 # wait for the first finished iteration
        if line.startswith("iter 1/1000") or time.time() > deadline:
            break
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "stopped at iteration" in err and "--resume" in err
    it = int(err.split("stopped at iteration ")[1].split(";")[0])
    assert (tmp_path / f"snapshots/train_iter_{it}.solverstate").is_file()
    assert (tmp_path / f"snapshots/train_iter_{it}.caffemodel").is_file()


@pytest.mark.parametrize("model,args,says", [
    ("voc-fcn16s", [], "train voc-fcn32s first"),
    ("voc-fcn32s", [], "'python prepare.py get weights vgg16' downloads the classifier"),
    ("nyud-fcn32s-color-hha", [], "missing initial weights for the nyud-fcn32s-color stream"),
    ("voc-fcn-alexnet", ["--gpu", "9"], "CPU-only" if not CUDA else "GPU(s) answer here"),
    ("voc-fcn-alexnet", ["--gpu", "0", "--cpu"], "give one of them"),
    ("voc-fcn-alexnet", ["--weights", "/nope.caffemodel"], "weights file not found"),
    ("voc-fcn-alexnet", ["--iters", "0"], "--iters must be at least 1"),
    ("voc-fcn-alexnet", ["--resume", "/nope.solverstate"], "not found"),
    ("voc-fcn-alexnet", ["--out", "/proc/version"], "is a file, not a folder"),
    ("voc-fcn-alexnet", ["--out", "/proc/version/run"], "is under a file"),
])
def test_solve_errors_are_one_line(model, args, says, tmp_path):
    out = [] if "--out" in args else ["--out", tmp_path / "o"]
    r = solve(*args, *out, cwd=tmp_path, model=model)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_training_outside_a_model_folder_is_one_line(tmp_path):
    """fcn.train.main takes the model from the folder its solve.py passes."""
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from fcn import train; sys.exit(train.main(sys.argv[2], []))",
                        str(REPO), str(tmp_path / "not-a-model")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not-a-model is not a model directory" in r.stderr


def test_states_name_their_weights_relative_to_themselves(trained):
    s = caffe_pb2.SolverState()
    s.ParseFromString((trained[0] / "snapshots/train_iter_4.solverstate").read_bytes())
    assert s.learned_net == "train_iter_4.caffemodel"


def test_a_moved_or_copied_run_resumes_from_its_own_weights(trained, fixture_data, tmp_path):
    """A state written before patch 0015 names its weights by absolute path: the run
    folder moved, every resume failed; copied, it resumed from the original's weights.
    The weights beside the state are used instead."""
    orig = tmp_path / "orig"
    shutil.copytree(trained[0], orig)
    rewrite_state(orig / "snapshots/train_iter_2.solverstate",
                  learned_net=str(orig / "snapshots/train_iter_2.caffemodel"))
    moved = tmp_path / "moved"
    orig.rename(moved)        # the path in the state is gone (a copy: that of another run)
    r = solve("--resume", moved / "snapshots/train_iter_2.solverstate", "--iters", 3,
              "--test-interval", 3, "--data-root", fixture_data, "--out", moved, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at iteration 2" in r.stdout and (moved / "final.caffemodel").is_file()


def test_the_newest_intact_snapshot_is_found_past_a_damaged_one(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    newest = out / "snapshots/train_iter_4.caffemodel"
    newest.write_bytes(newest.read_bytes()[:1000])
    said = []
    assert snapshots.last_snapshot(out, said.append) == \
        out / "snapshots/train_iter_2.solverstate"
    assert len(said) == 1 and "train_iter_4.caffemodel" in said[0] and "damaged" in said[0]
    (out / "snapshots/train_iter_2.solverstate").write_bytes(b"\0" * 100)
    assert snapshots.last_snapshot(out) is None


def test_a_run_stopped_after_its_last_snapshot_finishes_on_resume(trained, fixture_data,
                                                                   tmp_path):
    """The last iteration is snapshotted; a kill before final.caffemodel left every
    resume refused ('the state is at iteration 4, not before --iters 4')."""
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    (out / "final.caffemodel").unlink()
    r = solve("--resume", out / "snapshots/train_iter_4.solverstate", "--iters", 4,
              "--data-root", fixture_data, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the final ones" in r.stdout
    assert (out / "final.caffemodel").read_bytes() == \
        (out / "snapshots/train_iter_4.caffemodel").read_bytes()
    r = solve("--resume", out / "snapshots/train_iter_4.solverstate", "--iters", 3,
              "--data-root", fixture_data, "--out", out, cwd=tmp_path)
    assert r.returncode == 2 and "past --iters 3" in r.stderr, r.stderr


def test_an_output_folder_in_use_is_one_line(fixture_data, alexnet_weights, tmp_path):
    with files.locked(tmp_path / "o", "--out"):
        r = solve("--weights", alexnet_weights, "--iters", 2, "--data-root", fixture_data,
                  "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"is in use by process {os.getpid()}" in r.stderr
    assert not (tmp_path / "o/metrics.jsonl").exists()


def test_a_folder_of_the_users_is_not_an_output_folder(fixture_data, alexnet_weights,
                                                       tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/progress.png").write_bytes(b"my own plot")
    r = solve("--weights", alexnet_weights, "--iters", 2, "--data-root", fixture_data,
              "--out", tmp_path / "mine", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds files this project did not write (progress.png)" in r.stderr
    assert (tmp_path / "mine/progress.png").read_bytes() == b"my own plot"


def test_a_full_disk_stops_training_with_one_line(fixture_data, small_disk, tmp_path):
    """A snapshot that does not fit: Caffe aborted (exit 134) inside
    SerializeToOstream and left its half-written files."""
    disk = small_disk(8 * 1024)
    r = solve("--from-scratch", "--iters", 4, "--test-interval", 2, "--data-root", fixture_data,
              "--out", disk, cwd=tmp_path, model="camvid-fcn8s-squeezenet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    # 8 MB hold one snapshot of its 3.1 MB of weights (and as much history), not two
    assert "not enough disk space for a snapshot" in r.stderr
    assert "stopped at iteration 4; the last snapshot is disk0/snapshots/train_iter_2." \
        "solverstate" in r.stderr and "solve.py --resume" in r.stderr
    assert list((disk / ".snapshot-tmp").iterdir()) == []
    assert sorted(p.name for p in (disk / "snapshots").iterdir()) == [
        "train_iter_2.caffemodel", "train_iter_2.solverstate"]
    assert [m["iter"] for m in lines(disk / "metrics.jsonl")] == [2, 4]


def test_a_damaged_line_in_the_middle_of_a_log_loses_no_record(tmp_path, capsys):
    """A damaged line in the middle of metrics.jsonl made a resume cut the log there:
    every intact record after it went ("dropped 2 damaged line(s) at its end ... 0
    records kept"). Only a damaged tail (a run killed mid-append) is cut; a damaged
    line with records after it is skipped with a note, and stays in the file."""
    log = tmp_path / "metrics.jsonl"
    rec = [json.dumps({"iter": i, "mean_iu": 0.5}) + "\n" for i in (2, 4, 6, 8)]
    kept = rec[0] + '{"iter": 3, "mea\n' + rec[1] + "\0" * 8 + "\n" + rec[2] + rec[3]
    log.write_text(kept + '{"iter": 10, "mean_')
    said = []
    assert [r["iter"] for r in files.read_jsonl(log, say=said.append)] == [2, 4, 6, 8]
    assert log.read_text() == kept                                 # the tail cut, only it
    assert len(said) == 2 and "skipped 2 damaged line(s) (lines 2, 4)" in said[0], said
    assert "dropped 1 damaged line(s) at its end" in said[1] and "4 records kept" in said[1]
    said.clear()
    assert [r["iter"] for r in files.read_jsonl(log, say=said.append)] == [2, 4, 6, 8]
    assert len(said) == 1 and log.read_text() == kept

    log.write_text('{"iter": 2, "mea\n' + rec[1] + rec[2])          # what a resume does
    assert training.drop_records_after(log, 4) == 1
    assert lines(log) == [json.loads(rec[1])]
    assert "0 records kept" not in capsys.readouterr().out

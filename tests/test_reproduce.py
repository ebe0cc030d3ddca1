"""reproduce.py end to end on fixture data: the datasets' archives and the
classifier are 'downloaded' from a loopback server acting as the HTTP proxy (the
real URLs, never the network), checked against a record of their hashes
($FCN_CHECKSUMS), unpacked and derived; VGG-16 goes through surgery; the staged
nets train (a few iterations each, --test-iters) and are scored; the table is
written. reproduce.py keeps weights in its repository, so these tests run a copy
of the code and the committed nets (no weights, no outputs) in a temporary folder.
The fixture classifier is a VGG-16 caffemodel of the real shape, random-filled."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

import caffe

import fixtures
from fcn import files, preparation, zoo
from fcn.datasets import DATASETS
from conftest import REPO, fill_random
from loopback import RangeHandler, proxy_env, start, tar_of

ITERS = 2           # per stage; scored and snapshotted every iteration


def copy_repo(dst):
    dst.mkdir()
    for p in REPO.glob("*.py"):
        shutil.copy2(p, dst / p.name)
    for d in [*zoo.MODELS, "ilsvrc-nets", "fcn"]:
        shutil.copytree(REPO / d, dst / d,
                        ignore=shutil.ignore_patterns("*.caffemodel", "__pycache__"))


def write_record(path, table):
    path.write_text(json.dumps({u: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                                for u, b in table.items()}))


def random_weights(proto, path, seed):
    net = caffe.Net(str(proto), caffe.TEST)
    fill_random(net, seed=seed, scale=0.01)
    net.save(str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    repo = base / "repo"
    copy_repo(repo)
    raw = base / "raw"
    rng = np.random.default_rng(5)
    fixtures.make_sbdd(raw, rng)
    fixtures.make_voc(raw, rng)
    served = {
        DATASETS["sbdd"].sources[0].url: tar_of(raw / "sbdd/dataset", "benchmark_RELEASE/dataset"),
        DATASETS["voc"].sources[0].url: tar_of(raw / "pascal/VOC2011",
                                              "TrainVal/VOCdevkit/VOC2011"),
        zoo.CLASSIFIERS["vgg16"].url: random_weights(
            REPO / "ilsvrc-nets/VGG_ILSVRC_16_layers_deploy.prototxt", base / "vgg.caffemodel", 7),
    }
    record = base / "checksums.json"
    write_record(record, served)
    httpd, url = start()
    RangeHandler.files = dict(served)
    env = {**os.environ, **proxy_env(url),
           "FCN_CHECKSUMS": str(record), "PYTHONPATH": ""}
    yield SimpleNamespace(base=base, repo=repo, env=env, record=record, served=served,
                          data=base / "data", out=base / "out")
    httpd.shutdown()
    shutil.rmtree(base, ignore_errors=True)     # gigabytes of VGG-16 snapshots


def command(world, *args):
    return [sys.executable, str(world.repo / "reproduce.py"), *map(str, args)]


def reproduce(world, *args, env=None):
    return subprocess.run(command(world, *args), env=env or world.env, cwd=world.base,
                          capture_output=True, text=True, timeout=1200)


def voc_args(world, *more):
    return ["voc", "--models", "voc-fcn8s", "--test-iters", ITERS, "--data-root", world.data,
            "--out", world.out, *more]


def test_voc_killed_in_a_stage_continues_and_ends_in_the_table(world):
    out = world.out / "voc"
    log = world.base / "first.log"
    snap = out / "voc-fcn16s/snapshots/train_iter_1.solverstate"
    with open(log, "w") as f:
        p = subprocess.Popen(command(world, *voc_args(world)), env=world.env, cwd=world.base,
                             stdout=f, stderr=subprocess.STDOUT)
        t0 = time.time()
        while not snap.is_file() and p.poll() is None and time.time() - t0 < 900:
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)           # a killed machine: no handler runs
        p.wait()
    first = log.read_text()
    assert snap.is_file(), first[-3000:]
    # the plan came first: every step, with the estimate from iterations timed here
    plan = first[first.index("reproduce voc"):first.index("== data sbdd")]
    for step in ("data sbdd", "data voc", "weights vgg16", "train voc-fcn32s",
                 "train voc-fcn16s", "train voc-fcn8s", "score voc-fcn8s"):
        assert f"[todo] {step}:" in plan, plan
    assert "s per iteration" in plan and "estimate:" in plan
    assert "size and sha256 match the record" in first            # downloads were checked
    assert (world.repo / "ilsvrc-nets/vgg16-fcn.caffemodel").is_file()   # surgery
    assert (out / "voc-fcn32s/final.caffemodel").is_file()
    assert not (out / "voc-fcn16s/final.caffemodel").exists()
    final32 = (out / "voc-fcn32s/final.caffemodel").stat().st_mtime_ns

    r = reproduce(world, *voc_args(world))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    for step in ("data sbdd", "data voc", "weights vgg16", "train voc-fcn32s"):
        assert f"[done] {step}:" in r.stdout
    assert "[todo] train voc-fcn16s: resume at iteration" in r.stdout
    assert "resumed from" in r.stdout and "== data" not in r.stdout
    assert (out / "voc-fcn32s/final.caffemodel").stat().st_mtime_ns == final32
    scored = [json.loads(l)["iter"] for l in (out / "voc-fcn16s/metrics.jsonl").open()]
    assert scored == list(range(1, ITERS + 1))                  # each iteration scored once
    table = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in table["rows"]}
    assert list(rows) == ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s"]
    for name, paper_iu in (("voc-fcn32s", 63.6), ("voc-fcn16s", 65.0), ("voc-fcn8s", 65.5)):
        row = rows[name]
        assert row["paper"]["mean_iu"] == paper_iu and row["release"]["mean_iu"] == paper_iu
        assert row["split"] == "seg11valid" and row["n_images"] == 2
        assert all(0 <= v <= 100 for v in row["ours"].values())
        assert row["difference"]["mean_iu"] == round(row["ours"]["mean_iu"] - paper_iu, 2)
    md = (out / "results.md").read_text()
    assert "| voc-fcn8s | 2 |" in md and "paper: mean IU" in md
    assert md.splitlines()[4] in r.stdout                        # the table is printed too

    # once more: every step done, nothing redone, the same table
    again = reproduce(world, *voc_args(world))
    assert again.returncode == 0, again.stderr
    assert "[todo]" not in again.stdout and "== " not in again.stdout
    assert json.loads((out / "results.json").read_text()) == table

    # --redo a stage: it and the stages that start from it, shown by --dry-run, kept
    dry = reproduce(world, *voc_args(world, "--redo", "voc-fcn16s", "--dry-run"))
    assert dry.returncode == 0, dry.stderr
    assert "training again voc-fcn16s, voc-fcn8s (--dry-run: nothing removed)" in dry.stdout
    assert "[done] train voc-fcn32s" in dry.stdout and "[todo] train voc-fcn16s" in dry.stdout
    assert "[todo] train voc-fcn8s" in dry.stdout and "[todo] score voc-fcn8s" in dry.stdout
    assert (out / "voc-fcn16s/final.caffemodel").is_file()


def test_released_weights_are_downloaded_checked_and_scored(world):
    url = zoo.MODELS["voc-fcn8s"].caffemodel_url
    body = random_weights(REPO / "voc-fcn8s/deploy.prototxt", world.base / "8s.caffemodel", 11)
    RangeHandler.files[url] = body
    record = world.base / "checksums-released.json"
    write_record(record, {**world.served, url: body})
    env = {**world.env, "FCN_CHECKSUMS": str(record)}
    r = reproduce(world, *voc_args(world, "--released"), env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "] train " not in r.stdout                   # no training step in the plan
    released = world.repo / "voc-fcn8s/fcn8s-heavy-pascal.caffemodel"
    assert released.read_bytes() == body
    rows = json.loads((world.out / "voc/results-released.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["voc-fcn8s"]
    # the same numbers as score.py gives for those weights
    s = subprocess.run([sys.executable, str(world.repo / "score.py"), "voc-fcn8s", "--weights",
                        released, "--data-root", world.data, "--json"], env=world.env,
                       capture_output=True, text=True, timeout=600)
    assert s.returncode == 0, s.stderr
    assert rows[0]["ours"]["mean_iu"] == pytest.approx(100 * json.loads(s.stdout)["mean_iu"])


def test_a_wrong_or_unrecorded_download_stops_with_one_line(world):
    url32 = zoo.MODELS["voc-fcn32s"].caffemodel_url
    url16 = zoo.MODELS["voc-fcn16s"].caffemodel_url
    RangeHandler.files[url32] = b"not the weights" * 100
    RangeHandler.files[url16] = b"something new" * 100
    record = world.base / "checksums-wrong.json"
    write_record(record, {**world.served, url32: b"the real weights" * 100})
    env = {**world.env, "FCN_CHECKSUMS": str(record)}
    for model, says in (("voc-fcn32s", "checksum mismatch for fcn32s-heavy-pascal.caffemodel"),
                        ("voc-fcn16s", "has nothing on record")):
        r = reproduce(world, "voc", "--released", "--models", model, "--test-iters", ITERS,
                      "--data-root", world.data, "--out", world.out, env=env)
        assert r.returncode == 2, r.stdout[-2000:]
        last = r.stderr.splitlines()[-1]         # (the progress bar is on stderr too)
        assert last.startswith("reproduce.py: ") and says in last, r.stderr
        assert "Traceback" not in r.stderr
    assert not (world.repo / "voc-fcn32s/fcn32s-heavy-pascal.caffemodel").exists()
    assert "--trust-new-downloads" in last


def test_siftflow_two_heads_in_the_table(world):
    root = world.base / "siftflow-data"
    fixtures.make_siftflow(root, np.random.default_rng(6))
    preparation.derive("siftflow", root)               # there already: checked, not downloaded
    r = reproduce(world, "siftflow", "--models", "siftflow-fcn16s", "--test-iters", 1,
                  "--data-root", root, "--out", world.out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "== data siftflow" in r.stdout and "siftflow: http" not in r.stdout
    rows = {row["model"]: row for row in
            json.loads((world.out / "siftflow/results.json").read_text())["rows"]}
    assert list(rows) == ["siftflow-fcn32s", "siftflow-fcn16s"]
    assert all(0 <= row["ours"]["geo_accuracy"] <= 100 for row in rows.values())
    assert rows["siftflow-fcn16s"]["paper"]["mean_iu"] == 39.5
    assert rows["siftflow-fcn16s"]["paper"]["geo_accuracy"] == 94.3
    assert "ours: geo acc" in (world.out / "siftflow/results.md").read_text()


@pytest.mark.parametrize("args,says", [
    (["voc", "--models", "siftflow-fcn8s"], "--models siftflow-fcn8s: models of voc are"),
    (["voc", "--redo", "everything"], "--redo everything: stages of voc are"),
    (["voc", "--gpu", "0", "--cpu"], "give one of them"),
    (["voc", "--out", "/proc/version"], "is a file, not a folder"),
])
def test_user_mistakes_are_one_line(world, args, says):
    r = reproduce(world, *args, "--dry-run")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_released_redo_of_a_model_keeps_what_training_made(world):
    """--released trains nothing: --redo MODEL scores its released weights again and
    leaves that model's trained weights and snapshots alone (they were deleted)."""
    stage = world.out / "voc/voc-fcn8s"
    kept = sorted(p.relative_to(stage) for p in stage.rglob("*.caffemodel"))
    assert (stage / "final.caffemodel").is_file() and kept
    env = {**world.env, "FCN_CHECKSUMS": str(world.base / "checksums-released.json")}
    r = reproduce(world, *voc_args(world, "--released", "--redo", "voc-fcn8s"), env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "--redo voc-fcn8s: scoring voc-fcn8s's released weights again" in r.stdout
    assert "== score voc-fcn8s" in r.stdout
    assert sorted(p.relative_to(stage) for p in stage.rglob("*.caffemodel")) == kept


@pytest.mark.parametrize("speed", ["[]", "null", "{}", '{"x": [-1, 2]}', '{"k": [NaN, 1]}',
                                   "FOLDER", "\x00\xff"])
def test_damaged_caches_are_rebuilt_not_tracebacks(world, speed):
    """speed.json, a score record and a data stamp damaged in every way a crash or an
    editor leaves them: each is treated as absent (timed, scored or checked again)."""
    world.out.mkdir(exist_ok=True)
    files.claim_folder(world.out, "--out", "reproduce.py")     # (made by earlier runs)
    saved = {}
    paths = [world.out / "speed.json", world.out / "voc/scores/voc-fcn8s.json",
             world.data / "pascal/VOC2011/.fcn-checked"]
    for p in paths:
        saved[p] = p.read_bytes() if p.is_file() else None
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        if speed == "FOLDER":
            paths[0].unlink(missing_ok=True)
            paths[0].mkdir()
        else:
            paths[0].write_bytes(speed.encode("utf-8", "surrogateescape"))
        paths[1].write_text("[]")
        paths[2].write_bytes(b"\xff\xfe\x00 binary")
        r = reproduce(world, *voc_args(world, "--dry-run"))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        assert "estimate: -" not in r.stdout and "about -" not in r.stdout     # no negative time
        assert "[todo] data voc" in r.stdout and "[todo] score voc-fcn8s" in r.stdout
        assert "estimate:" in r.stdout
    finally:
        if paths[0].is_dir():
            paths[0].rmdir()
        for p, data in saved.items():
            if data is not None:
                p.write_bytes(data)
            else:
                p.unlink(missing_ok=True)


def test_a_data_root_that_cannot_be_written_is_refused_before_the_timing(world, tmp_path):
    (tmp_path / "file").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    try:
        for root, says in [(tmp_path / "file", "is a file, not a folder"),
                           *([(ro, "cannot be written")] if mounted else [])]:
            r = reproduce(world, "voc", "--data-root", root, "--out", tmp_path / "o",
                          "--dry-run")
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, \
                r.stderr
            assert "timing" not in r.stdout
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)])


def test_an_output_folder_in_use_is_one_line(world):
    with files.locked(world.out, "--out"):
        r = reproduce(world, *voc_args(world, "--dry-run"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"is in use by process {os.getpid()}" in r.stderr


# ---------------------------------------------------------------------------
# Several steps at once: CPU workers here, and a real one-node SLURM cluster

ONE = ("--models", "voc-fcn16s", "--test-iters", 1)     # 32s -> 16s, one iteration each


def fresh(world, name):
    """A new data root and output folder (the data steps run again; the classifier's
    FCN initialisation, in the repository, is there from the first test)."""
    return ["--data-root", world.base / f"{name}-data", "--out", world.base / f"{name}-out"]


def ours(out):
    table = json.loads((out / "voc/results.json").read_text())
    return {row["model"]: row["ours"] for row in table["rows"]}


def same_table(got, want):
    assert list(got) == list(want) == ["voc-fcn32s", "voc-fcn16s"]
    for m in want:
        for k, v in want[m].items():
            assert got[m][k] == pytest.approx(v, abs=1e-6), (m, k)


@pytest.fixture(scope="module")
def sequential(world):
    """The reference: the same steps one after another in one process."""
    args = fresh(world, "seq")
    r = reproduce(world, "voc", *ONE, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    return ours(args[3])


def test_cpu_workers_run_the_ready_steps_at_once(world, sequential):
    args = fresh(world, "workers")
    dry = reproduce(world, "voc", *ONE, *args, "--workers", 2, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    path = next(l for l in dry.stdout.splitlines() if "critical path:" in l)
    assert path.startswith("  critical path: data ") and "weights" not in path  # (done)
    assert path.endswith(" -> train voc-fcn32s -> train voc-fcn16s -> score voc-fcn16s -> "
                         "table voc" + path[path.rindex(": about"):])
    assert "on 2 devices" in dry.stdout and "(after data sbdd, data voc, weights vgg16)" in \
        dry.stdout
    r = reproduce(world, "voc", *ONE, *args, "--workers", 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    lines = r.stdout.splitlines()

    def at(text):
        return next(i for i, l in enumerate(lines) if text in l)
    # the steps that need nothing of each other ran at once, each in a log of its own;
    # those that need another ran after it (VOC's seg11valid is made from SBD's list)
    assert at("data/sbdd: done") < at("data/voc: started")
    assert at("train/voc-fcn32s: done") < at("train/voc-fcn16s: started")
    assert at("score/voc-fcn32s: started") < at("train/voc-fcn16s: done")
    assert "8 of 8 steps done" in r.stdout
    logs = args[3] / "logs"
    assert (logs / "train-voc-fcn16s.log").is_file() and "resume" not in \
        (logs / "train-voc-fcn16s.log").read_text()
    same_table(ours(args[3]), sequential)


def test_a_failed_step_stops_only_the_steps_that_need_it(world):
    """VOC's archive does not match its record: data voc fails, data sbdd is made, and
    nothing that needs VOC runs."""
    record = json.loads(world.record.read_text())
    url = DATASETS["voc"].sources[0].url
    record[url]["sha256"] = "0" * 64
    bad = world.base / "bad-record.json"
    bad.write_text(json.dumps(record))
    args = fresh(world, "failing")
    r = reproduce(world, "voc", *ONE, *args, "--workers", 2,
                  env={**world.env, "FCN_CHECKSUMS": str(bad)})
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    assert "data/voc: FAILED (exit 2" in r.stdout and "sha256" in r.stdout
    assert "data/sbdd: done" in r.stdout
    for step in ("train/voc-fcn32s", "train/voc-fcn16s", "score/voc-fcn32s", "table/voc"):
        assert f"{step}: not run (it needs" in r.stdout, step
    assert not (args[3] / "voc/voc-fcn32s").exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import slurm
    why = slurm.install()
    if why:
        pytest.skip(f"NO SLURM: {why}")
    c = slurm.Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


def jobs_of(out):
    return [v["job"] for v in json.loads((out / "slurm/jobs.json").read_text()).values()]


def test_slurm_runs_the_dataset_to_the_sequential_table(world, cluster, sequential):
    env = {**world.env, **cluster.env}
    args = ["voc", *ONE, *fresh(world, "slurm"), "--slurm", "--cpus-per-task", 1]
    out = args[-4]
    dry = reproduce(world, *args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    lines = {l.split("=", 1)[0]: l for l in dry.stdout.splitlines() if "=$(sbatch" in l}
    assert sorted(lines) == ["data_sbdd", "data_voc", "score_voc_fcn16s", "score_voc_fcn32s",
                             "table_voc", "train_voc_fcn16s", "train_voc_fcn32s"]
    assert "--dependency=afterok:$data_sbdd " in lines["data_voc"]
    assert re.search(r"--dependency=afterok:(\S+:)?\$train_voc_fcn32s --kill-on-invalid-dep=yes "
                     r"\S+/slurm/train-voc-fcn16s.sh\)$", lines["train_voc_fcn16s"])
    assert "--dependency=afterok:$score_voc_fcn32s:$score_voc_fcn16s " in lines["table_voc"]
    assert "--dependency" not in lines["data_sbdd"]
    assert not (out / "slurm/jobs.json").exists()
    r = reproduce(world, *args, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "train/voc-fcn16s: job " in r.stdout and " after " in r.stdout
    again = reproduce(world, *args, env=env)          # queued jobs are not submitted twice
    assert again.returncode == 0 and again.stdout.count("already queued") >= 1, again.stdout
    cluster.wait(jobs_of(out))
    status = reproduce(world, *args[:-3], "--status", env=env)
    assert status.returncode == 0, status.stderr
    assert "8 done" in status.stdout, status.stdout
    same_table(ours(out), sequential)
    last = reproduce(world, *args, env=env)           # all done: nothing to submit
    assert last.returncode == 0 and "every step is done: nothing to submit" in last.stdout
    assert len(jobs_of(out)) == 7                     # (VGG-16's weights were there)


def test_a_job_cancelled_mid_stage_resumes_from_its_snapshot(world, cluster):
    env = {**world.env, **cluster.env}
    args = ["voc", "--models", "voc-fcn32s", "--test-iters", 6, *fresh(world, "cancel"),
            "--slurm", "--cpus-per-task", 1]
    out = args[-4]
    r = reproduce(world, *args, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    snap = out / "voc/voc-fcn32s/snapshots/train_iter_3.caffemodel"   # (of 6: every 3)
    t0 = time.time()
    while not snap.is_file() and time.time() - t0 < 600 and cluster.queued(jobs_of(out)):
        time.sleep(0.2)
    assert snap.is_file(), reproduce(world, *args[:-3], "--status", env=env).stdout
    c = reproduce(world, *args[:-3], "--cancel", env=env)
    assert c.returncode == 0 and "cancelled" in c.stdout, c.stdout + c.stderr
    cluster.wait(jobs_of(out))
    status = reproduce(world, *args[:-3], "--status", env=env).stdout
    assert "train/voc-fcn32s: stopped" in status or "train/voc-fcn32s: failed" in status, status
    assert "score/voc-fcn32s: not run (it needs train/voc-fcn32s" in status or \
        "score/voc-fcn32s: not submitted" in status or "score/voc-fcn32s: failed" in status
    r = reproduce(world, *args, env=env)              # the same command: what is not done
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "[todo] train voc-fcn32s: resume at iteration" in r.stdout
    cluster.wait(jobs_of(out))
    log = (out / "logs/train-voc-fcn32s.log").read_text()
    assert "resumed from" in log, log[-2000:]
    assert (out / "voc/results.json").is_file()


def test_slurm_refusals_are_one_line_and_submit_nothing(world, cluster, tmp_path):
    env = {**world.env, **cluster.env}
    base = ["voc", *ONE, "--data-root", tmp_path / "d", "--out", tmp_path / "o", "--slurm"]
    template = tmp_path / "t.sh"
    template.write_text("#SBATCH --mem=1G\nmodule load cuda\n")
    no_sbatch = tmp_path / "bin"
    no_sbatch.mkdir()
    (no_sbatch / "python3").symlink_to(sys.executable)
    for more, says, e in [(["--time", "soon"], "--time 'soon'", env),
                          (["--slurm-template", template], "may hold only #SBATCH lines", env),
                          (["--partition", "nosuch"], "sbatch refused", env),
                          ([], "no sbatch on PATH", {**env, "PATH": str(no_sbatch)})]:
        r = reproduce(world, *base, *more, env=e)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, \
            (more, r.stdout[-1000:], r.stderr)
        assert not (tmp_path / "o/slurm/jobs.json").exists()
    q = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=cluster.run_env)
    assert q.stdout.strip() == ""
    r = reproduce(world, "voc", "--partition", "x", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--partition goes with --slurm" in r.stderr

"""The newcomer's path, as README tells it: a fresh copy of the repository (its
tracked files, as a clone has them) with ../shared beside it and no FCN_* variable
set. `make demo DEMO_ITERS=3` sets up (a new .venv; Caffe from the build cache),
finds CamVid and SqueezeNet in the shared data by itself and trains; then README's
other commands that can run on the shared data, from another working directory with
relative paths, as a user types them."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO, shared_dir


def tracked_copy(dst):
    """The repository's tracked files as they are in the working tree (a clone of the
    committed state in CI, which runs on a clean clone)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory, shared_data):
    top = tmp_path_factory.mktemp("newcomer")
    repo = tracked_copy(top / "fcn")
    (top / "shared").symlink_to(shared_dir().resolve(), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCN_")}
    env.pop("PYTHONPATH", None)
    # the cache of built Caffes is the newcomer's default one unless CI moved it
    if "FCN_CACHE_DIR" in os.environ:
        env["FCN_CACHE_DIR"] = os.environ["FCN_CACHE_DIR"]
    r = subprocess.run(["make", "demo", "DEMO_ITERS=3"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    yield top, repo, env, r
    shutil.rmtree(top, ignore_errors=True)


def run(newcomer, *args):
    """A command of the fresh copy, typed from the folder above it (relative paths)."""
    top, repo, env, _ = newcomer
    return subprocess.run([str(repo / ".venv/bin/python"), *map(str, args)], cwd=top, env=env,
                          capture_output=True, text=True, timeout=900)


def test_make_demo_finds_the_shared_data_and_trains(newcomer):
    top, repo, _, r = newcomer
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"data from {top / 'shared/data'}" in r.stdout      # ../shared beside the copy
    assert "fine-tuning camvid-fcn8s-squeezenet on CamVid train for 3 iterations" in r.stdout
    out = repo / "out/demo"
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "camvid-fcn8s-squeezenet" and m["iterations"] == 3
    assert m["n_images"] == 101 and 0 <= m["mean_iu"] <= 1 and m["device"]["kind"] == "CPU"
    assert set(m["per_class_iu"]) >= {"sky", "road", "car"}
    assert (out / "train/final.caffemodel").is_file() and (out / "progress.png").is_file()
    assert len(list((out / "overlays").iterdir())) == 4
    assert "bow tie" in r.stdout and "chickadee" in r.stdout      # the decoded classifier
    assert f"metrics:  {out / 'metrics.json'}" in r.stdout


def test_readme_commands_on_the_shared_data(newcomer):
    top, repo, _, demo = newcomer
    assert demo.returncode == 0, demo.stderr[-2000:]
    weights = "fcn/out/demo/train/final.caffemodel"

    r = run(newcomer, "fcn/prepare.py", "check", "camvid", "--split", "val")
    assert r.returncode == 0 and "camvid: complete" in r.stdout, r.stdout + r.stderr

    r = run(newcomer, "fcn/score.py", "camvid-fcn8s-squeezenet", "--weights", weights, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_images"] == 101

    r = run(newcomer, "fcn/infer.py", "shared/data/voc-demo/image.jpg", "--model",
            "camvid-fcn8s-squeezenet", "--weights", weights, "--out", "segmented")
    assert r.returncode == 0, r.stderr
    assert (top / "segmented/image.png").is_file() and (top / "segmented/image_overlay.jpg").is_file()

    r = run(newcomer, "fcn/reference.py", "export", "camvid-fcn8s-squeezenet", "--weights",
            weights, "--image", "shared/data/photos/cat.bmp", "--out", "ref.npz")
    assert r.returncode == 0 and (top / "ref.npz").is_file(), r.stderr
    r = run(newcomer, "fcn/reference.py", "compare", "ref.npz", "ref.npz")
    assert r.returncode == 0, r.stdout[-2000:]

    r = run(newcomer, "fcn/camvid-fcn8s-squeezenet/solve.py", "--weights",
            "fcn/out/demo/squeezenet-fcn.caffemodel", "--iters", 2, "--test-interval", 2,
            "--out", "trained")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert (top / "trained/final.caffemodel").is_file()
    assert json.loads((top / "trained/metrics.jsonl").read_text().splitlines()[-1])[
        "n_images"] == 101

    r = run(newcomer, "fcn/nets.py", "--check")
    assert r.returncode == 0, r.stdout

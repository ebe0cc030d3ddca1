"""make demo's pipeline end to end, on a few iterations instead of 2000."""
import json
import os
import subprocess
import sys

from conftest import REPO


def demo(*args, env=None, tmp_path):
    return subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), *args,
                           "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GLOG_minloglevel": "2", **(env or {})})


def test_demo_pipeline_on_a_few_iterations(shared_data, tmp_path):
    r = demo("--iters", "3", "--overlays", "2", env={"FCN_DATA": str(shared_data)},
             tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "demo"
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "camvid-fcn8s-squeezenet" and m["n_images"] == 101
    assert m["iterations"] == 3
    assert 0 <= m["mean_iu"] <= 1 and set(m["per_class_iu"]) >= {"sky", "road", "car"}
    assert (out / "progress.png").is_file() and len(list((out / "overlays").iterdir())) == 2
    assert "bow tie" in r.stdout and "chickadee" in r.stdout      # the decoded classifier
    assert f"metrics:  {out / 'metrics.json'}" in r.stdout


def test_demo_without_data_says_what_to_get(tmp_path):
    r = demo(env={"FCN_DATA": str(tmp_path / "nothing")}, tmp_path=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "python prepare.py get camvid" in r.stderr and "compressed_SqueezeNet.net" in r.stderr

"""make demo without its data. (The pipeline end to end, a few iterations instead of 2000,
is tests/test_newcomer.py: make demo in a fresh copy, as a newcomer runs it.)"""
import json
import os
import subprocess
import sys

from conftest import REPO


def demo(*args, env=None, tmp_path):
    return subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), *args,
                           "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GLOG_minloglevel": "2", **(env or {})})


def test_demo_without_data_says_what_to_get(tmp_path):
    r = demo(env={"FCN_DATA": str(tmp_path / "nothing")}, tmp_path=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "python prepare.py get camvid" in r.stderr and "compressed_SqueezeNet.net" in r.stderr


def demo_speed(*args, env):
    return subprocess.run([sys.executable, str(REPO / "bench/demo_speed.py"), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GLOG_minloglevel": "2", **env})


def test_demo_speed_against_the_same_build_with_a_variable_set(shared_data):
    """bench/demo_speed.py --baseline-env: real iterations of the demo's net with this
    build and with CAFFE_WINOGRAD=0; the JSON names its baseline beside both timings."""
    env = {"FCN_DATA": str(shared_data)}
    bad = demo_speed("--baseline-env", "CAFFE_WINOGRAD", env=env)
    assert bad.returncode == 2 and "expected NAME=VALUE" in bad.stderr.splitlines()[-1]
    r = demo_speed("--baseline-env", "CAFFE_WINOGRAD=0", "--rounds", "1", "--iters", "1",
                   env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["baseline_is"] == "this build, CAFFE_WINOGRAD=0"
    for name in ("this", "baseline"):
        assert out[name]["iteration_s"] > 0 and len(out["per_process_s"][name]) == 1

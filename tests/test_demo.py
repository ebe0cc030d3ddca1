"""make demo without its data. (The pipeline end to end, a few iterations instead of 2000,
is tests/test_newcomer.py: make demo in a fresh copy, as a newcomer runs it.)"""
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

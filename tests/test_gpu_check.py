"""The GPU check, rehearsed without a GPU (docs/gpu.md): the rehearsal's copy-and-run
step at small scale (what travels, copied; no network; the CPU build's wheel; two
nets; every part), and the check failing when it must: a device output left
unwritten, a wrong update, a part that crashes, a wheel pip refuses, a wheel that
does not import, no GPU at all. `make gpu-rehearsal` is the same at full scale with
the CUDA wheels for Python 3.12."""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, venv_with_project_packages

NETS = "voc-fcn-alexnet,camvid-fcn8s-squeezenet"
STAND_IN = {"FCN_GPU_CHECK_STAND_IN": "cpu", "GLOG_minloglevel": "2"}


@pytest.fixture(scope="module")
def pack(cpu_wheel, shared_data):
    """The carried folder, small: the CPU wheel and the check's data at a quarter size.
    Inside the repo (only such paths can be carried), removed after."""
    path = REPO / "out" / f"gpu-pack-test-{os.getpid()}"
    r = subprocess.run([sys.executable, str(REPO / "scripts/gpu_rehearsal.py"), "--steps",
                        "wheels,pack", "--wheel", str(cpu_wheel[0]), "--pack", str(path),
                        "--small"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "gpu rehearsal: pack: the check's data in" in r.stdout
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def machine_python(tmp_path_factory):
    """A Python standing in for the machine's: a fresh venv whose packages are the
    project's (a .pth file), not its Caffe: the check must import the wheel's."""
    venv = venv_with_project_packages(tmp_path_factory.mktemp("machine") / "venv")
    return venv / "bin/python3"


def check(pack, out, *args, env=None, python=None):
    """scripts/gpu-check.sh with the CPU standing in; (exit code, stdout, stderr, JSON)."""
    path = f"{Path(python).parent}:{os.environ['PATH']}" if python else os.environ["PATH"]
    r = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), "--pack", str(pack), *args],
                       capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "OUT": str(out), "PATH": path, **(env or {})})
    result = json.loads((out / "gpu-check.json").read_text())
    return r.returncode, r.stdout, r.stderr, result


def test_the_rehearsal_runs_what_travels_with_no_network(pack, machine_python, tmp_path):
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, str(REPO / "scripts/gpu_rehearsal.py"), "--steps",
                        "run", "--pack", str(pack), "--models", NETS, "--sgd-models",
                        "camvid-fcn8s-squeezenet", "--machine-python", str(machine_python),
                        "--results", str(results)],
                       capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    m = re.fullmatch(r"gpu rehearsal: passed; carry: (\S+) \(([\d.]+) MiB\); device command: "
                     r"(.+)", last)
    assert m, last
    assert m.group(1) == pack.relative_to(REPO).as_posix() and float(m.group(2)) < 64
    assert m.group(3) == f"bash scripts/gpu-check.sh --pack {m.group(1)} --models {NETS} " \
        "--sgd-models camvid-fcn8s-squeezenet"
    assert "no network" in r.stdout
    assert sorted(p.name for p in results.iterdir()) == ["gpu-check.json", "gpu-check.log"]
    result = json.loads((results / "gpu-check.json").read_text())
    assert result["passed"] and result["complete"] and result["stand_in"] == "cpu"
    (tag, build), = result["builds"].items()
    assert tag == "cpu" and build["install"] == "pip --target"
    assert build["import"]["caffe"].startswith("/tmp/") and "/.venv/" not in \
        build["import"]["caffe"]                       # the wheel's Caffe, not the project's
    assert [row["model"] for row in build["deploy"]] == NETS.split(",")
    for row in build["deploy"]:
        assert row["score"]["written_finite"] == 1.0 and row["score"]["argmax_agreement"] == 1
    assert [row["model"] for row in build["sgd"]] == ["camvid-fcn8s-squeezenet"]
    for row in build["sgd"]:
        assert row["update_max_diff_over_size"] == 0.0 and not row["params_without_update"]
        assert row["learned_params"] > 0 and row["loss_cpu"] == row["loss_device"]
    speed = build["speed"]
    assert speed["fcn8s_forward"]["caffe_s"] > 0 and speed["fcn32s_sgd_iteration"]["caffe_s"] > 0
    assert speed["camvid_training"]["device_it_per_s"] > 0
    memory = build["memory"]
    assert memory["fcn8s"]["used_gb"] > 0 and memory["too_large_60000x40000"]["exit"] == 2
    for part in ("deploy", "sgd", "memory", "speed"):
        assert part in build["seconds"]
    for what in ("gpu", "driver", "python", "six", "numpy", "protobuf"):
        assert what in result["preflight"], what


def test_the_check_fails_when_the_device_is_wrong(pack, tmp_path):
    """Planted faults: the device pass of one net skips its last layer (its scores are
    left as they were: poisoned), the device's SGD runs at 1.5 times the learning
    rate, Caffe aborts in the speed part after its first figure. Each is caught and
    named; the other parts' figures are kept."""
    faults = "unwritten:voc-fcn-alexnet,update:camvid-fcn8s-squeezenet,abort:speed"
    rc, out, err, result = check(pack, tmp_path, "--models", NETS, "--sgd-models",
                                 "camvid-fcn8s-squeezenet",
                                 env={**STAND_IN, "FCN_GPU_CHECK_FAULT": faults},
                                 python=REPO / ".venv/bin/python")
    assert rc == 1 and not result["passed"] and result["complete"]
    build = result["builds"]["cpu"]
    alexnet, camvid = build["deploy"]
    assert alexnet["score"]["written_finite"] == 0.0
    assert camvid["score"]["written_finite"] == 1.0 and camvid["score"]["argmax_agreement"] == 1
    sgd, = build["sgd"]
    assert sgd["update_max_diff_over_size"] > 1e-3
    assert "crashed" in build["speed"] and "SIGABRT" in build["speed"]["crashed"]
    assert "Check failed" in build["speed"]["crashed"]
    assert build["speed"]["fcn8s_forward"]["caffe_s"] > 0       # measured before the abort
    assert build["memory"]["fcn8s"]["used_gb"] > 0              # the part after it ran
    failures = build["failures"]
    assert len(failures) == 3, failures
    assert "deploy voc-fcn-alexnet score: 100.0% of the device's values were never written" \
        in failures[0]
    assert "sgd camvid-fcn8s-squeezenet: the update of" in failures[1]
    assert failures[2].startswith("speed: killed by SIGABRT")
    assert out.strip().splitlines()[-1].startswith("gpu-check: FAILED: cpu: deploy voc-fcn-alexnet")


def test_wheels_that_cannot_be_used_are_recorded_and_the_check_goes_on(pack, tmp_path):
    """A wheel pip refuses (not a zip) and one that installs but does not import (its
    _caffe.so damaged): each recorded with its reason; the good wheel is still checked,
    and the summary says failed."""
    good = next((pack / "wheels").glob("*.whl"))
    py = good.name.split("-")[2]
    bad = tmp_path / f"fcn_caffe-9.0.2+cu130-{py}-{py}-manylinux_2_34_x86_64.whl"
    bad.write_bytes(b"not a wheel")
    broken = tmp_path / f"fcn_caffe-9.0.2+cu130.cudnn9-{py}-{py}-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if re.match(r"caffe/_caffe.*\.so$", item.filename):
                data = data[:4096]
            dst.writestr(item, data)
    rc, out, err, result = check(pack, tmp_path / "out", str(bad), str(broken), str(good),
                                 "--models", "voc-fcn-alexnet", "--parts", "deploy",
                                 env=STAND_IN, python=REPO / ".venv/bin/python")
    assert rc == 1 and not result["passed"]
    builds = result["builds"]
    assert list(builds) == ["cu130", "cu130.cudnn9", "cpu"]      # CUDA first, then cuDNN
    assert builds["cu130"]["install"].startswith("pip refused it")
    assert not builds["cu130.cudnn9"]["import"]["ok"]
    assert builds["cu130.cudnn9"]["import"]["error"].startswith("killed by SIGBUS")
    assert builds["cpu"]["passed"] and builds["cpu"]["deploy"][0]["model"] == "voc-fcn-alexnet"
    assert "cpu: passed; 1 deploy nets" in out


def test_without_a_gpu_it_says_so_in_one_line_and_in_the_json(pack, tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is here: the check would run")
    r = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), "--pack", str(pack)],
                       capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if not k.startswith("FCN_")}
                       | {"OUT": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("gpu-check: no NVIDIA GPU answers here")
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    assert not result["passed"] and result["reason"].startswith("no NVIDIA GPU answers here")
    assert result["preflight"]["gpu"]["ok"] is False


def test_without_python_the_json_still_says_why(tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh")], capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path),
                                       "PYTHON": "no-such-python3"})
    assert r.returncode == 2 and "no 'no-such-python3' on PATH" in r.stderr
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    assert result == {"passed": False, "complete": False,
                      "reason": "no 'no-such-python3' on PATH"}


def test_a_wheel_is_named_by_its_build_and_python():
    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_check
    assert gpu_check.wheel_info(Path("fcn_caffe-9.0.2+cu130-cp312-cp312-manylinux_2_34_x86_64"
                                     ".whl")) == ("cu130", "cp312")
    assert gpu_check.wheel_info(Path("fcn_caffe-9.0.2+cu130.cudnn9-cp312-cp312-manylinux_2_34"
                                     "_x86_64.whl")) == ("cu130.cudnn9", "cp312")
    assert gpu_check.cuda_of("cu130.cudnn9") == (13, 0) and gpu_check.cuda_of("cpu") is None
    assert gpu_check.wheel_info(Path("other-1.0-py3-none-any.whl")) == (None, None)

"""make wheel (CPU build, this Python): a wheel of the built Caffe that installs with
`pip --no-index --no-deps` into a fresh venv and imports there with no compiler and
none of the build's libraries (auditwheel vendored them). The CUDA wheel is made the
same way (FCN_GPU=1; install/cuda-check.sh's build); docs/gpu.md."""
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import REPO, purelib, venv_with_project_packages


def test_the_wheel_holds_caffe_and_its_libraries(cpu_wheel):
    path, r = cpu_wheel
    tag = sysconfig.get_config_var("SOABI").split("-")[1]
    assert path.name.startswith("fcn_caffe-") and f"-cp{tag}-cp{tag}-manylinux_" in path.name
    assert "MiB" in r.stdout and "sha256" in r.stdout
    names = zipfile.ZipFile(path).namelist()
    assert any(n.startswith("caffe/_caffe.") and n.endswith(".so") for n in names)
    assert "caffe/proto/caffe_pb2.py" in names and "caffe/fcn_build.json" in names
    vendored = [n for n in names if ".libs/" in n]
    for lib in ("libglog", "libprotobuf", "libhdf5", "libopenblas"):
        assert any(lib in n for n in vendored), (lib, vendored)
    build = json.loads(zipfile.ZipFile(path).read("caffe/fcn_build.json"))
    assert build["cuda"] is False


def test_setup_installs_it_offline_and_it_imports_without_the_build(cpu_wheel, tmp_path):
    """make setup FCN_WHEEL=... (steps venv, wheel, check: pip --no-index --no-deps) into
    a fresh venv. Its pinned packages come from the project's venv through a .pth
    file, and the venv step's stamp says they are there, so nothing is downloaded."""
    import hashlib
    path, _ = cpu_wheel
    venv = venv_with_project_packages(tmp_path / "venv")
    (venv / ".fcn-requirements").write_text(
        hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest() + "\n")
    r = subprocess.run(["bash", str(REPO / "install/setup.sh")], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "FCN_VENV": str(venv),
                                         "FCN_WHEEL": str(path), "PYTHON": sys._base_executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "requirements up to date" in r.stdout and f"installed {path.name}" in r.stdout
    assert "import caffe works" in r.stdout and "caffe: " not in r.stdout   # nothing compiled
    code = ("import caffe, json; from caffe import layers as L; "
            "n = caffe.NetSpec(); n.data = L.Input(shape=dict(dim=[1, 3, 8, 8])); "
            "n.conv = L.Convolution(n.data, num_output=2, kernel_size=3); "
            "open('n.prototxt', 'w').write(str(n.to_proto())); "
            "net = caffe.Net('n.prototxt', caffe.TEST); net.forward(); "
            "print(json.dumps({'file': caffe.__file__, 'out': list(net.blobs['conv'].shape)}))")
    r = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300, env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["file"].startswith(str(venv)) and got["out"] == [1, 2, 6, 6]
    so = next((Path(purelib(venv / "bin/python")) / "caffe").glob("_caffe*.so"))
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        if any(lib in line for lib in ("glog", "protobuf", "hdf5", "openblas", "boost")):
            assert ".libs/" in line, line            # the wheel's copy, not the system's
    assert "not found" not in ldd, ldd
    r = subprocess.run(["bash", str(REPO / "install/setup.sh"), "wheel"], capture_output=True,
                       text=True, env={**os.environ, "FCN_WHEEL": str(tmp_path / "none.whl")})
    assert r.returncode == 1 and "no such file" in r.stderr and r.stderr.count("\n") == 1

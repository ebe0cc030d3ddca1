"""install/setup.sh: idempotent, one-line failures, a build cache keyed by content."""
import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO

SETUP = REPO / "install" / "setup.sh"


def run_setup(*args, repo=REPO, **env):
    return subprocess.run(["bash", str(repo / "install" / "setup.sh"), *args],
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=300)


def sdist_sha():
    for line in (REPO / "third_party/caffe/sdist.env").read_text().splitlines():
        if line.startswith("SDIST_SHA256="):
            return line.split("=", 1)[1]


def test_second_run_is_a_no_op():
    r = run_setup()
    assert r.returncode == 0, r.stderr
    assert "found in cache" in r.stdout and "installed in .venv" in r.stdout
    assert "requirements up to date" in r.stdout
    assert "building" not in r.stdout and "installing" not in r.stdout


def test_import_caffe_from_any_directory(tmp_path):
    r = subprocess.run([str(REPO / ".venv/bin/python"), "-c",
                        "import caffe, os; print(os.path.dirname(caffe.__file__))"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(REPO / ".venv")


def one_error_line(r, step):
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"setup: {step} failed: "), lines[0]
    return lines[0]


def test_sdist_with_wrong_hash_is_refused(tmp_path):
    bad = tmp_path / "brocolli-caffe-9.0.2.tar.gz"
    bad.write_bytes(b"not the sdist")
    r = run_setup("sdist", FCN_CAFFE_SDIST=str(bad), FCN_CACHE_DIR=str(tmp_path / "cache"))
    line = one_error_line(r, "sdist")
    assert sdist_sha() in line and str(bad) in line


def test_missing_local_sdist_is_named(tmp_path):
    r = run_setup("sdist", FCN_CAFFE_SDIST=str(tmp_path / "nope.tar.gz"))
    assert "nope.tar.gz does not exist" in one_error_line(r, "sdist")


def test_unknown_step_is_one_line():
    assert "unknown step 'bogus'" in one_error_line(run_setup("bogus"), "setup")


def test_half_written_cache_entries_are_never_used(tmp_path):
    cache = tmp_path / "cache"
    key = run_setup("key").stdout.strip()
    entry = cache / "caffe" / key
    (entry / "caffe").mkdir(parents=True)                  # no .complete marker
    stale = cache / "caffe" / f"{key}.tmp.999999999"       # an interrupted build
    stale.mkdir()
    stamp_before = (REPO / ".venv/.fcn-caffe-key").read_text()
    # No sdist is available, so the rebuild it must attempt stops right after cleaning up.
    r = run_setup("caffe", FCN_CACHE_DIR=str(cache), FCN_CAFFE_SDIST=str(tmp_path / "none"))
    assert "no verified sdist" in one_error_line(r, "caffe")
    assert not entry.exists() and not stale.exists()
    assert (REPO / ".venv/.fcn-caffe-key").read_text() == stamp_before


def test_cache_key_follows_the_build_inputs(tmp_path):
    key = run_setup("key").stdout.strip()
    assert len(key) == 16
    assert (REPO / ".venv/.fcn-caffe-key").read_text().strip() == key

    # A copy of the repo's build inputs, sharing the real .venv (a CUDA build's key
    # holds the toolkit that requirements-cuda*.txt name).
    copy = tmp_path / "repo"
    for d in ("install", "third_party"):
        shutil.copytree(REPO / d, copy / d)
    for f in ("requirements-cuda.txt", "requirements-cudnn.txt"):
        shutil.copy(REPO / f, copy / f)
    (copy / ".venv").symlink_to(REPO / ".venv")
    assert run_setup("key", repo=copy).stdout.strip() == key
    # documentation beside the build inputs is not one
    readme = copy / "third_party/caffe/README.md"
    readme.write_text(readme.read_text() + "\nmore words\n")
    assert run_setup("key", repo=copy).stdout.strip() == key

    patch = sorted((copy / "third_party/caffe/patches").glob("*.patch"))[0]
    patch.write_text(patch.read_text() + "\n")
    changed = run_setup("key", repo=copy).stdout.strip()
    assert changed != key
    (copy / "third_party/caffe/patches/9999-new.patch").write_text("x")
    assert run_setup("key", repo=copy).stdout.strip() not in (key, changed)


def test_gpu_build_choice():
    """FCN_GPU=0 forces the CPU build, a value other than 0/1 is one line; with no GPU
    answering and FCN_GPU unset, the build is the one .venv holds (the CPU one, unless
    FCN_GPU=1 made a CUDA one), and so is its key."""
    from fcn.device import build_info
    r = run_setup("cuda", FCN_GPU="0")
    assert r.returncode == 0 and "cuda: CPU build" in r.stdout, r.stderr
    assert "FCN_GPU=yes" in one_error_line(run_setup("cuda", FCN_GPU="yes"), "setup")
    assert "FCN_CUDNN=2" in one_error_line(run_setup("cuda", FCN_CUDNN="2"), "setup")
    if shutil.which("nvidia-smi") is None:
        held = "1" if build_info().get("cuda") else "0"
        assert run_setup("key").stdout == run_setup("key", FCN_GPU=held).stdout
        assert (run_setup("key").stdout == run_setup("key", FCN_GPU="0").stdout) == \
            (held == "0")


def test_the_cuda_toolkit_from_the_wheels_compiles_and_links(tmp_path):
    """The toolkit the `cuda` step installs builds a CUDA program end to end (nvcc
    links cudart from lib64/, which the wheels lay out as lib/). Needs the wheels
    already in the build cache (FCN_GPU=1 make setup once): no 585 MB download in
    a test. Nothing runs on a GPU."""
    import hashlib
    import re
    import pytest
    cache = Path(os.environ.get("FCN_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcn-caffe")
    key = hashlib.sha256((REPO / "requirements-cuda.txt").read_bytes()).hexdigest()[:16]
    if not (cache / "cuda" / key / ".complete").is_file():
        pytest.skip(f"NO CUDA TOOLKIT: {cache}/cuda/{key} not made yet (FCN_GPU=1 make setup)")
    r = run_setup("cuda", FCN_GPU="1")
    assert r.returncode == 0, r.stderr
    home = re.search(r"cuda: CUDA build for .* \((\S+)\)", r.stdout).group(1)
    (tmp_path / "k.cu").write_text("__global__ void k(float *x) { x[threadIdx.x] *= 2; }\n"
                                   "int main() { k<<<1, 1>>>(nullptr); return 0; }\n")
    c = subprocess.run([f"{home}/bin/nvcc", "-arch=sm_90", "k.cu", "-o", "k"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr
    assert (tmp_path / "k").is_file()


def test_the_patched_sources_compiled_as_cpp_include_no_thrust(tmp_path):
    """CUDA 13 keeps thrust (CCCL 3) in include/cccl/, which nvcc adds for .cu files
    but the C++ compiler of the .cpp files never sees, and CCCL 3 needs C++17 where
    Caffe is C++14: a .cpp that includes thrust stops the cuDNN build (FCN_CUDNN=1;
    patch 0020). The sdist unpacked and patched as build.sh does; no .cpp or header
    may include it."""
    sdist = run_setup("sdist-path").stdout.strip()
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["tar", "-xzf", sdist, "-C", str(src), "--strip-components=1"], check=True)
    for p in sorted((REPO / "third_party/caffe/patches").glob("*.patch")):
        subprocess.run(["patch", "-p1", "--forward", "--batch", "--quiet", "-d", str(src),
                        "-i", str(p)], check=True, capture_output=True)
    found = [str(f.relative_to(src)) for pattern in ("src/**/*.cpp", "include/**/*.hpp")
             for f in src.glob(pattern) if "thrust/" in f.read_text(errors="replace")]
    assert found == []

"""Shared test helpers: the shared data, float32 tolerances, random weights, and
the fixtures every module uses (a small FCN's weights, fixture datasets)."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the commands and fcn/

import fcn  # noqa: E402,F401  (first: Caffe's logging set up before caffe loads)
import caffe  # noqa: E402
import numpy as np  # noqa: E402

import fixtures  # noqa: E402  (beside this file)
from fcn import preparation, squeezenet  # noqa: E402
from fcn.initial import make_fcn_init  # noqa: E402
from fcn.paths import REPO, SHARED  # noqa: E402
from fcn.surgery import interp  # noqa: E402


def shared_dir():
    """The shared data folder: $FCN_SHARED, else ../shared beside the repo."""
    return SHARED


@pytest.fixture(scope="session")
def shared_data():
    """Path of shared/data; skips (with the reason listed by -ra) when absent."""
    d = shared_dir() / "data"
    if not d.is_dir():
        pytest.skip(f"SHARED DATA MISSING: {d} not found (set FCN_SHARED to the shared folder)")
    return d


EPS32 = 2.0 ** -23          # float32 machine epsilon


def assert_f32_close(got, want, terms, scale=None):
    """Equal up to the rounding of float32 sums of ``terms`` products computed in any
    order, as thread counts, SIMD widths and BLAS kernels choose: |got - want| <=
    terms * eps * scale, ``scale`` being the magnitude of the values compared (by
    default the largest |want|). Never tuned to one machine's rounding."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want).max()) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=0, atol=terms * EPS32 * scale)


def _tile(dst, src, scale):
    """dst (a param's array, any shape) <- src repeated over it, times scale, written
    in place a block at a time (a VGG-16 FCN's fc6 is 100 million values)."""
    flat = dst.reshape(-1)
    for start in range(0, flat.size, src.size):
        n = min(src.size, flat.size - start)
        np.multiply(src[:n], scale, out=flat[start:start + n])


def fill_random(net, seed=0, scale=0.01):
    """Random weights, cheaply: a million normal draws tiled over each param."""
    base = np.random.default_rng(seed).standard_normal(1 << 20, dtype=np.float32)
    for params in net.params.values():
        for i, p in enumerate(params):
            _tile(p.data, np.roll(base, i + p.data.size), np.float32(scale))


def fill_he(net, seed=0):
    """Random weights that keep the activations' scale through a deep net (He et al.:
    std sqrt(2 / fan-in)), biases and per-channel scales of std 0.1, and every
    Deconvolution bilinear, as the zoo's nets have it."""
    base = np.random.default_rng(seed).standard_normal(1 << 20, dtype=np.float32)
    for params in net.params.values():
        for i, p in enumerate(params):
            w = p.data
            std = np.sqrt(2.0 / np.prod(w.shape[1:])) if w.ndim > 1 else 0.1
            _tile(w, np.roll(base, i + w.size), np.float32(std))
    interp(net)


def purelib(python):
    """The site-packages folder of ``python``."""
    return Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())


def venv_with_project_packages(venv):
    """A fresh venv of this Python whose packages are the project's .venv's (a .pth
    file), Caffe among them unless something comes before it on the path."""
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    (purelib(venv / "bin/python") / "deps.pth").write_text(
        str(purelib(REPO / ".venv/bin/python")) + "\n")
    return venv


@pytest.fixture(scope="session")
def cpu_wheel():
    """make wheel for this Python (the CPU build, from the build cache): (its path, the
    run of install/wheel.sh)."""
    import os
    out = REPO / "out/wheels"
    before = set(out.glob("*.whl")) if out.is_dir() else set()
    r = subprocess.run(["bash", str(REPO / "install/wheel.sh")], capture_output=True, text=True,
                       timeout=1200, env={**os.environ, "FCN_GPU": "0",
                                          "PYTHON": sys._base_executable})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    made = [p for p in out.glob("*.whl") if p not in before] or \
        sorted(out.glob("fcn_caffe-*+cpu-*.whl"), key=lambda p: p.stat().st_mtime)[-1:]
    assert made, r.stdout
    return made[-1], r


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory):
    """voc-fcn-alexnet weights (random, bilinear upsampling): the smallest FCN of the
    zoo, for tests of the CLIs that need a real caffemodel."""
    net = caffe.Net(str(REPO / "voc-fcn-alexnet/deploy.prototxt"), caffe.TEST)
    fill_random(net, seed=3, scale=0.05)
    interp(net)
    path = tmp_path_factory.mktemp("weights") / "fcn-alexnet-random.caffemodel"
    net.save(str(path))
    return path


@pytest.fixture(scope="session")
def squeezenet_decoded(shared_data, tmp_path_factory):
    """The ImageNet SqueezeNet of the shared data decoded: (caffemodel, non-zero
    weights, weights)."""
    out = tmp_path_factory.mktemp("squeezenet") / "squeezenet_v1.0.caffemodel"
    nnz, total = squeezenet.decode_to_caffemodel(shared_data / "squeezenet", out)
    return out, nnz, total


@pytest.fixture(scope="session")
def squeezenet_fcn_init(squeezenet_decoded):
    """make demo's surgery: the decoded SqueezeNet cast into the FCN backbone."""
    out = squeezenet_decoded[0].parent / "squeezenet-fcn.caffemodel"
    make_fcn_init("squeezenet", weights=squeezenet_decoded[0], out=out)
    return out


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory):
    """Every dataset in its raw format, derived, under one data root."""
    root = fixtures.make_all(tmp_path_factory.mktemp("data"))
    for d in ("voc", "nyud", "siftflow", "pascalcontext"):
        preparation.derive(d, root)
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A file system of a given size (a tmpfs mounted under tmp_path, so that writing
    into it fills it): small_disk(kilobytes) -> its folder. Skips, saying why, where
    mounting is not permitted."""
    mounted = []

    def make(kb):
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"NO SMALL DISK: cannot mount a tmpfs here ({r.stderr.strip()}); "
                        "the disk-full tests need root")
        mounted.append(d)
        return d
    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)

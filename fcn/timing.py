"""What the benchmarks (bench/) and the GPU check share: the sizes FCN-8s is timed
at, random inputs, random weights that keep the activations' scale through VGG-16
(the nets whose trained weights are not here), and the timing of two or more
functions against each other (warmed up, alternated, medians)."""
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import caffe
import numpy as np

from fcn.paths import REPO, cache_dir, sdist_env
from fcn.surgery import interp

SIZES = [(500, 500), (334, 500)]          # FCN-8s's forward is timed at these (H, W)


def image_input(h, w, seed=1):
    """A 1x3xHxW input with the range of a preprocessed image."""
    return np.random.default_rng(seed).uniform(-120, 130, (1, 3, h, w)).astype(np.float32)


def random_weights(net, seed=0):
    """He-style random weights (activations keep their scale through VGG-16), biases of
    std 0.1; deconvolutions bilinear, as in every FCN."""
    rng = np.random.default_rng(seed)
    for params in net.params.values():
        w = params[0].data
        fan_in = max(int(np.prod(w.shape[1:])), 1)
        w[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32((2 / fan_in) ** 0.5)
        for b in params[1:]:
            b.data[...] = rng.standard_normal(b.data.shape, dtype=np.float32) * 0.1
    interp(net)


def make_weights(tmp, model="voc-fcn8s", onnx=False):
    """Random weights for a model (and, with ``onnx``, its ONNX export beside them,
    written by ``reference.py onnx`` in its own process: the workers started after it
    inherit this process's peak memory as theirs)."""
    net = caffe.Net(str(REPO / model / "deploy.prototxt"), caffe.TEST)
    random_weights(net)
    weights = Path(tmp) / f"{model}-random.caffemodel"
    net.save(str(weights))
    del net
    if onnx:
        subprocess.run([sys.executable, str(REPO / "reference.py"), "onnx", str(REPO / model),
                        "--weights", str(weights), "--out", str(weights.with_suffix(".onnx"))],
                       check=True, stdout=subprocess.DEVNULL)
    return weights


def alternate(fns, sync, rounds, reps, warm_s=1.0):
    """Median seconds of each function: each warmed up for ``warm_s`` (at least two
    calls), then ``rounds`` rounds of ``reps`` calls each, the order of the
    functions reversed every other round; synchronised before and after each call."""
    for fn in fns.values():
        t0, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - t0 < warm_s:
            fn()
            sync()
            n += 1
    times = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            for _ in range(reps):
                sync()
                t = time.perf_counter()
                fns[k]()
                sync()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, times


def baseline_package(rev):
    """The caffe package of git revision ``rev``'s build (third_party/caffe at that
    commit), built once into the build cache: the baseline the benchmarks compare
    this build against (bench/outputs_unchanged.py, bench/demo_speed.py)."""
    dest = cache_dir() / f"baseline-{rev[:12]}"
    if (dest / ".complete").is_file():
        return dest
    sdist = cache_dir() / "sdist" / sdist_env()["SDIST_FILE"]
    if not sdist.is_file():
        raise SystemExit(f"{sdist} missing: run make setup first")
    work = Path(tempfile.mkdtemp(prefix="baseline-"))
    tar = subprocess.run(["git", "archive", rev, "third_party/caffe"], cwd=REPO,
                         capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=tar, check=True)
    print(f"building the baseline Caffe of {rev[:12]} (a few minutes) ...", file=sys.stderr)
    log = work / "build.log"          # the compiler's output, shown only if the build fails
    with open(log, "w") as f:
        built = subprocess.run(["bash", str(work / "third_party/caffe/build.sh"), str(sdist),
                                str(work), str(work / "out"), sys.executable],
                               stdout=f, stderr=subprocess.STDOUT)
    if built.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tail}\nbuilding the baseline Caffe of {rev[:12]} failed; "
                         f"its log: {log}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(str(work / "out"), dest)
    (dest / ".complete").touch()
    shutil.rmtree(work, ignore_errors=True)
    return dest

"""Speed work must not change the numbers: FCN-8s score maps from this build
against the build before any speed patch, on the same random weights and input.

    python bench/outputs_unchanged.py [--baseline-rev REV] [--gpu N]

The baseline is the project's first Caffe build (git REV, default the initial
commit: the sdist with patches 0001-0003, pthread OpenBLAS, no OpenMP), made
once with third_party/caffe/build.sh into the build cache. Each build runs in
its own process. Prints one JSON line: per input size the largest absolute
difference, the largest score magnitude, their ratio, and whether every value
agrees to rtol 1e-4 (atol 1e-4 of the largest score).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fcn  # noqa: E402,F401  (first: Caffe's logging set up before caffe loads)

import caffe  # noqa: E402  (after fcn: quiet logging)
import numpy as np  # noqa: E402

from fcn.timing import SIZES, baseline_package, random_weights  # noqa: E402
from fcn.paths import REPO  # noqa: E402

WORKER = r'''
import sys, numpy as np, caffe
sys.path.insert(0, sys.argv[4])
from fcn.timing import SIZES, image_input
if sys.argv[5] == "cpu":
    caffe.set_mode_cpu()
else:
    caffe.set_device(int(sys.argv[5])); caffe.set_mode_gpu()
net = caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)
out = {}
for h, w in SIZES:
    x = image_input(h, w)
    net.blobs["data"].reshape(1, 3, h, w); net.reshape()
    out[f"{h}x{w}"] = net.forward(data=x)["score"].copy()
np.savez(sys.argv[3], __file__=np.array(caffe.__file__), **out)
'''


def initial_commit():
    return subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split()[-1]


def scores(pythonpath, weights, out, device="cpu"):
    env = {**os.environ, "GLOG_minloglevel": "2"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    subprocess.run([sys.executable, "-c", WORKER, str(REPO / "voc-fcn8s/deploy.prototxt"),
                    str(weights), str(out), str(REPO), device], env=env, check=True,
                   cwd=tempfile.gettempdir())
    import numpy as np
    return np.load(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline-rev")
    p.add_argument("--gpu", type=int, metavar="N",
                   help="this build's scores on GPU N (a CUDA build); the baseline's on the CPU")
    args = p.parse_args(argv)
    rev = args.baseline_rev or initial_commit()
    base = baseline_package(rev)
    with tempfile.TemporaryDirectory() as tmp:
        net = caffe.Net(str(REPO / "voc-fcn8s/deploy.prototxt"), caffe.TEST)
        random_weights(net)
        weights = Path(tmp) / "w.caffemodel"
        net.save(str(weights))
        del net
        old = scores(base, weights, Path(tmp) / "old.npz")
        new = scores(None, weights, Path(tmp) / "new.npz",
                     "cpu" if args.gpu is None else str(args.gpu))
        assert str(old["__file__"]).startswith(str(base)), "baseline build not used"
        line = {"bench": "outputs_unchanged", "baseline": rev[:12],
                "device": "CPU" if args.gpu is None else f"GPU {args.gpu}"}
        for h, w in SIZES:
            a, b = old[f"{h}x{w}"].astype(np.float64), new[f"{h}x{w}"].astype(np.float64)
            scale = float(np.abs(a).max())
            diff = float(np.abs(a - b).max())
            line[f"{h}x{w}"] = {"max_abs_diff": diff, "max_abs_score": scale,
                                "max_diff_over_max_score": diff / scale,
                                "allclose_rtol_1e-4": bool(np.allclose(b, a, rtol=1e-4,
                                                                       atol=1e-4 * scale)),
                                "same_argmax_fraction": float((a.argmax(1) == b.argmax(1)).mean())}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

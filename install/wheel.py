"""Pack a built Caffe (the caffe package setup installed into a venv) as a wheel.

    python install/wheel.py PACKAGE_DIR --out DIR    (install/wheel.sh runs it, with
                                                     the Python the package is for)

The wheel holds the package as built, its `fcn_build.json`, and for a CUDA build a
module that loads the CUDA libraries before `_caffe.so` does (from the PyPI
`nvidia-*` wheels on sys.path, else the machine's CUDA); wheel.sh then lets
auditwheel vendor every other library it loads. Standard library only.
"""
import argparse
import base64
import hashlib
import json
import shutil
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # (the fcn package)

from fcn.paths import sdist_env  # noqa: E402  (pure Python)

NAME = "fcn_caffe"

# The CUDA libraries a CUDA build links, which the wheel leaves to the nvidia-* wheels
# (or the machine's toolkit) rather than carrying hundreds of megabytes of them:
# (file, the PyPI distribution, the folder under site-packages that wheel fills).
CUDA_LIBS = [("libcudart.so.13", "nvidia-cuda-runtime>=13.0,<14", "nvidia/cu13/lib"),
             ("libcublasLt.so.13", "nvidia-cublas>=13.0,<14", "nvidia/cu13/lib"),
             ("libcublas.so.13", "nvidia-cublas>=13.0,<14", "nvidia/cu13/lib"),
             ("libcurand.so.10", "nvidia-curand>=10.4,<11", "nvidia/cu13/lib")]
CUDNN_LIBS = [("libcudnn.so.9", "nvidia-cudnn-cu13>=9,<10", "nvidia/cudnn/lib")]

PRELOAD = '''"""Loads the CUDA libraries _caffe.so needs before it is loaded (written by
install/wheel.py into the CUDA wheel): from the PyPI nvidia-* wheels on sys.path,
else $CUDA_HOME/lib64 or /usr/local/cuda/lib64; a library found nowhere is left
to the system's loader (LD_LIBRARY_PATH, ldconfig), which names it if it fails."""
import ctypes
import os
import sys
from pathlib import Path

LIBS = {libs!r}


def _load():
    homes = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    for name, sub in LIBS:
        dirs = [Path(p) / sub for p in sys.path if p] + \\
            [Path(h) / "lib64" for h in homes if h]
        for d in dirs:
            if (d / name).is_file():
                ctypes.CDLL(str(d / name), mode=ctypes.RTLD_GLOBAL)
                break


_load()
'''


def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def pack(package, out):
    """The wheel of ``package`` (an installed caffe/ folder) in ``out``; its path."""
    package = Path(package)
    build = json.loads((package / "fcn_build.json").read_text())
    cuda, cudnn = bool(build.get("cuda")), bool(build.get("cudnn"))
    libs = CUDA_LIBS + (CUDNN_LIBS if cudnn else []) if cuda else []
    local = "cpu" if not cuda else "cu130" + (".cudnn9" if cudnn else "")
    version = f"{sdist_env()['SDIST_VERSION']}+{local}"
    py = "cp%d%d" % sys.version_info[:2]      # (run by the venv's Python it was built for)
    tag = f"{py}-{py}-{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "caffe"
        shutil.copytree(package, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if libs:
            (stage / "_cuda_libs.py").write_text(PRELOAD.format(
                libs=[(name, sub) for name, _, sub in libs]))
            init = stage / "__init__.py"
            init.write_text("from . import _cuda_libs  # noqa: F401  (first: CUDA libraries)\n"
                            + init.read_text())
        dist = f"{NAME}-{version}.dist-info"
        requires = ["numpy>=1.21", "protobuf>=4.21", "six", "scikit-image", "pillow"] + \
            sorted({req for _, req, _ in libs})
        meta = {
            f"{dist}/METADATA": "Metadata-Version: 2.1\n"
                                f"Name: {NAME.replace('_', '-')}\nVersion: {version}\n"
                                "Summary: BVLC-era Caffe with pycaffe, built by the FCN "
                                "reference reproduction (brocolli-caffe sdist + patches)\n"
                                "License: BSD-2-Clause\n"
                                + "".join(f"Requires-Dist: {r}\n" for r in requires),
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: fcn-caffe install/wheel.py\n"
                             f"Root-Is-Purelib: false\nTag: {tag}\n",
            f"{dist}/top_level.txt": "caffe\n",
        }
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{NAME}-{version}-{tag}.whl"
        record = []
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(p for p in stage.rglob("*") if p.is_file()):
                arc = f"caffe/{f.relative_to(stage).as_posix()}"
                data = f.read_bytes()
                info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (0o755 if f.suffix == ".so" else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
                record.append(f"{arc},{digest(data)},{len(data)}")
            for arc, text in meta.items():
                z.writestr(arc, text)
                record.append(f"{arc},{digest(text.encode())},{len(text.encode())}")
            record.append(f"{dist}/RECORD,,")
            z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return path, [name for name, _, _ in libs]


def main(argv=None):
    p = argparse.ArgumentParser(prog="wheel.py", description=__doc__.split("\n")[0])
    p.add_argument("package", help="an installed caffe package folder (with _caffe*.so)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if not list(Path(args.package).glob("_caffe*.so")):
        print(f"wheel.py: {args.package} holds no _caffe*.so; is it a built caffe package?",
              file=sys.stderr)
        return 2
    path, excluded = pack(args.package, args.out)
    print(json.dumps({"wheel": str(path), "exclude": excluded}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

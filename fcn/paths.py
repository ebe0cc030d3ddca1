"""Where things are: the repository, its output folder, the shared data beside it,
the Caffe sdist's record, and paths as a user types them back. Pure Python."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The project's own output folder (make clean removes it): what is in it is ours.
OUT = REPO / "out"
# The shared data beside the repository (../shared; $FCN_SHARED for the tests): CamVid
# and SqueezeNet for the CPU-scale method, photos, the VOC demo pair.
SHARED = Path(os.environ.get("FCN_SHARED") or REPO.parent / "shared")
SHARED_DATA = SHARED / "data"
CAFFE_DIR = REPO / "third_party" / "caffe"


def shown(path):
    """A path as a user can type it back from here: relative to the working directory
    when it is below it, else absolute (every relative path on a command line is
    relative to the working directory)."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def sdist_env():
    """third_party/caffe/sdist.env: the Caffe sdist every build starts from (name,
    version, file, sha256), as a dict."""
    return dict(line.split("=", 1) for line in (CAFFE_DIR / "sdist.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def cache_dir():
    """The build cache install/setup.sh fills ($FCN_CACHE_DIR, else
    ${XDG_CACHE_HOME:-~/.cache}/fcn-caffe): Caffe builds, the sdist, the CUDA toolkit."""
    env = os.environ.get("FCN_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcn-caffe"

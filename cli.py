"""What every command-line entry point shares: quiet Caffe logging, user mistakes
reported as one line with exit code 2 instead of a traceback, and the checks of
user input made at the edge, before any long work starts.

Import this module before caffe: glog reads GLOG_minloglevel when Caffe loads.
"""
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from errors import FcnError

os.environ.setdefault("GLOG_minloglevel", "2")   # Caffe's INFO/WARNING lines off unless asked


class UserError(FcnError):
    """A mistake in what the user asked for (a path, a name, a number); one line."""


def run(main, argv=None, prog=None):
    """Run ``main(argv)``; print user errors as 'prog: message' and return 2.
    SIGTERM (what schedulers and `timeout` send) is treated like Ctrl-C."""
    prog = prog or os.path.basename(sys.argv[0])
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        check_environment()
        return main(argv)
    except FcnError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def shown(path):
    """A path as a user can type it back from here: relative to the working directory
    when it is below it, else absolute (every relative path on a command line is
    relative to the working directory)."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def env_path(name):
    """$name as a Path resolved against the working directory, or None when unset;
    one line when it is set to nothing usable or names a file where a folder goes."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip() or "\0" in value:
        raise UserError(f"${name} is set to {value!r}; set it to a folder, or unset it")
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"${name} {path} is a file, not a folder; point it at a folder, or "
                        "unset it")
    return path


def env_choice(name, choices):
    value = os.environ.get(name)
    if value is not None and value not in choices:
        raise UserError(f"${name} is {value!r}; it must be {' or '.join(choices)}, or unset")
    return value


def check_environment():
    """Every environment variable the commands read, checked before any work (one line
    for a value that cannot be used): the data root, the memory limit of infer.py, and
    patch 0010's switch. ($FCN_CHECKSUMS: by the commands that download;
    scripts/setup.sh checks its own.)"""
    env_path("FCN_DATA")
    env_number("FCN_MAX_MEMORY_GB")
    env_choice("CAFFE_WINOGRAD", ("0", "1"))


def env_number(name, low=0.0):
    """$name as a number above ``low``, or None when unset; one line for anything else
    (a word, NaN, infinity, zero or less)."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number <= low:
        raise UserError(f"${name} is {value!r}; it must be a number above {low:g}, or unset")
    return number


def add_device_flags(parser):
    parser.add_argument("--gpu", type=int, metavar="N",
                        help="run on GPU N (a CUDA build of Caffe; by default GPU 0 when "
                             "the build has CUDA and a GPU answers)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is")


def build_info():
    """What the installed Caffe was built with: caffe/fcn_build.json, written by
    third_party/caffe/build.sh ({"cuda": false} for builds older than that file)."""
    import importlib.util
    spec = importlib.util.find_spec("caffe")
    info = Path(spec.origin).parent / "fcn_build.json" if spec and spec.origin else None
    try:
        return json.loads(info.read_text())
    except (AttributeError, OSError, ValueError):
        return {"cuda": False}


def visible_gpus():
    """Names of the NVIDIA GPUs that answer (nvidia-smi), in CUDA's order."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []


@dataclass(frozen=True)
class Device:
    """Where a command runs: the CPU, or GPU ``gpu`` (``name`` as nvidia-smi says).
    ``why`` says why the CPU ("--cpu", "no GPU answers"; "" on a CPU build)."""
    kind: str
    gpu: Optional[int] = None
    name: str = ""
    why: str = ""

    @property
    def is_gpu(self):
        return self.kind == "GPU"

    def __str__(self):
        """The line every command prints first: 'device: GPU 0 (NVIDIA H200)'."""
        if self.is_gpu:
            return f"device: GPU {self.gpu} ({self.name})"
        return "device: CPU" + (f" ({self.why})" if self.why else "")

    @property
    def short(self):
        """'GPU 0' or 'CPU': a key for timings per device."""
        return f"GPU {self.gpu}" if self.is_gpu else "CPU"

    def record(self):
        """What goes into the files a command writes."""
        info = build_info()
        return {"kind": self.kind, "gpu": self.gpu, "name": self.name or None,
                "caffe_cuda": bool(info.get("cuda")), "caffe_cudnn": bool(info.get("cudnn"))}


def use_device(gpu=None, cpu=False):
    """Put Caffe on the device a command runs on and return it (a Device): --cpu the
    CPU; --gpu N that GPU (refused in one line on a CPU build or when there is no GPU N;
    asking Caffe would abort the process); else GPU 0 when the build has CUDA and a GPU
    answers, the CPU otherwise."""
    if gpu is not None and cpu:
        raise UserError(f"--gpu {gpu} and --cpu: give one of them")
    cuda = bool(build_info().get("cuda"))
    gpus = visible_gpus() if cuda and not cpu else []
    if gpu is not None:
        if not cuda:
            raise UserError(f"--gpu {gpu}: this Caffe is built CPU-only; run without --gpu, "
                            "or build for CUDA with 'FCN_GPU=1 make setup' (README: GPU)")
        if not 0 <= gpu < len(gpus):
            raise UserError(f"--gpu {gpu}: {len(gpus)} GPU(s) answer here"
                            + (f" (ids 0..{len(gpus) - 1})" if gpus else "; run with --cpu"))
    elif gpus:
        gpu = 0
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
        return Device("CPU", why="--cpu" if cpu else "" if not cuda else "no GPU answers")
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return Device("GPU", gpu, gpus[gpu])


def gpu_free_bytes(device):
    """Free memory of the device's GPU: cudaMemGetInfo through the CUDA runtime Caffe
    loaded (the current device), else nvidia-smi's figure; None if neither answers."""
    import ctypes
    for name in ("libcudart.so.13", "libcudart.so"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
            return free.value
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,"
                              "nounits", "-i", str(device.gpu)], capture_output=True, text=True,
                             timeout=30)
        return int(out.stdout.split()[0]) * 2 ** 20 if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def finite(flag, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` unless it is NaN/inf or outside the bounds; one line naming ``flag``."""
    if value is None:
        return None
    bad = not math.isfinite(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        rng = f"a finite number in {lo or '(-inf'}, {hi or 'inf)'}"
        raise UserError(f"{flag} must be {rng}, got {value}")
    return value


def output_dir(path, flag):
    """Make sure ``path`` is (or can be made) a writable folder, before any work;
    returns it as a Path. One line if it is a file, under a file, or read-only."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise UserError(f"{flag} {path}: a file stands where a folder must be; "
                        f"choose another {flag}") from None
    except NotADirectoryError:
        raise UserError(f"{flag} {path} is under a file, not a folder; choose another {flag}") \
            from None
    except PermissionError:
        raise UserError(f"{flag} {path} is not writable; choose another {flag}") from None
    except OSError as e:
        raise UserError(f"{flag} {path} cannot be written: {e.strerror}") from None
    return path


def output_file(path, flag):
    """Make sure ``path`` can be written as a file (its folder is made if needed)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    output_dir(path.parent, f"{flag}'s folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is not writable; choose another {flag}")
    return path

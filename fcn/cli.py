"""What every command-line entry point shares: user mistakes reported as one line
with exit code 2 instead of a traceback, and the checks of user input made at the
edge, before any long work starts: numbers, output folders and files, environment
variables, the device flags."""
import math
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from fcn.errors import FcnError, UserError

__all__ = ["run", "finite", "image_size", "output_dir", "output_file",
           "env_path", "env_number", "env_choice", "check_environment", "add_device_flags",
           "add_data_root_flag"]


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
    patches 0010 and 0021's switches. ($FCN_CHECKSUMS: by the commands that download;
    install/setup.sh checks its own.)"""
    env_path("FCN_DATA")
    env_number("FCN_MAX_MEMORY_GB")
    env_choice("CAFFE_WINOGRAD", ("0", "1"))
    env_choice("CAFFE_CPU_ISA", ("avx512", "avx2", "plain"))


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


DATA_ROOT_HELP = ("the data root (default: $FCN_DATA, else the repo's data/, or the shared "
                  "data beside the repo, ../shared/data, where that holds what is needed)")


def add_data_root_flag(parser):
    """--data-root, the same on every command (fcn.datasets.data_root decides what it
    defaults to; fcn.datasets.checked_root checks it before any work)."""
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)


def add_device_flags(parser):
    parser.add_argument("--gpu", type=int, metavar="N",
                        help="run on GPU N (a CUDA build of Caffe; by default GPU 0 when "
                             "the build has CUDA and a GPU answers)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is")


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


def image_size(flag, text):
    """(H, W) from "HxW" (two whole numbers of at least 1); one line naming ``flag``
    otherwise."""
    m = re.fullmatch(r"([0-9]+)[xX]([0-9]+)", str(text))
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise UserError(f"{flag} must be HxW, two whole numbers of at least 1 (height x "
                        f"width, as 375x500), got {text!r}")
    return int(m[1]), int(m[2])


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

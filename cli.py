"""What every command-line entry point shares: quiet Caffe logging, and user
mistakes reported as one line with exit code 2 instead of a traceback.

Import this module before caffe: glog reads GLOG_minloglevel when Caffe loads.
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")   # Caffe's INFO/WARNING lines off unless asked


class UserError(Exception):
    """A mistake in what the user asked for (a path, a name, a file); one line."""


def user_errors():
    """The exception types that mean "the input is wrong", not "the code is wrong"."""
    from caffemodel import WeightsError
    from layers import DataError
    from nets import BuildError
    from surgery import SurgeryError
    return (UserError, WeightsError, DataError, BuildError, SurgeryError)


def run(main, argv=None, prog=None):
    """Run ``main(argv)``; print user errors as 'prog: message' and return 2."""
    prog = prog or os.path.basename(sys.argv[0])
    try:
        return main(argv)
    except user_errors() as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def require_cpu(gpu):
    """This Caffe is built CPU-only; asking Caffe for a GPU would abort the process."""
    if gpu is not None:
        raise UserError(f"--gpu {gpu}: this Caffe is built CPU-only (see README: "
                        "'The Caffe we build'); run without --gpu")

"""Training snapshots: Caffe's solver state and weights, written atomically into a
run's snapshots/ folder (the last few kept), found again (the newest intact one),
and checked against a net before Caffe restores them (it aborts on a state that
does not fit). A state names its weights relative to itself (patch 0015)."""
import os
from pathlib import Path

from caffe.proto import caffe_pb2
from google.protobuf.message import DecodeError

from fcn import caffemodel, files
from fcn.errors import FcnError, UserError

KEEP = 3                  # snapshots kept per run (state and weights)


def snapshot(solver, out):
    """Caffe's snapshot, made atomic: written to a scratch folder, then renamed into
    out/snapshots/, the weights first (the state names them by file name, relative
    to itself: patch 0015). Checks first that the disk has room for it: Caffe aborts
    the process when a write fails. Keeps the last KEEP; returns the .solverstate
    path."""
    scratch, final = out / ".snapshot-tmp", out / "snapshots"
    scratch.mkdir(parents=True, exist_ok=True)
    final.mkdir(exist_ok=True)
    files.need_space(scratch, snapshot_bytes(solver.net), "a snapshot")
    solver.snapshot()
    stem = f"train_iter_{solver.iter}"
    os.replace(scratch / f"{stem}.caffemodel", final / f"{stem}.caffemodel")
    state_path = final / f"{stem}.solverstate"
    os.replace(scratch / f"{stem}.solverstate", state_path)
    prune(final)
    return state_path


def snapshot_bytes(net):
    """About what one snapshot writes: the weights, and the state's history of the same
    size, plus a margin for the files' framing."""
    params = sum(b.data.nbytes for blobs in net.params.values() for b in blobs)
    return 2 * params + (1 << 20)


def snapshot_iter(path):
    try:
        return int(path.name.split(".")[0].rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return None


def snapshot_files(folder):
    """(every snapshot file in ``folder``, the iterations that have both their state
    and their weights, ascending)."""
    found = [p for p in folder.glob("train_iter_*") if snapshot_iter(p) is not None
             and p.suffix in (".caffemodel", ".solverstate")]
    suffixes = {}
    for p in found:
        suffixes.setdefault(snapshot_iter(p), set()).add(p.suffix)
    return found, sorted(i for i, s in suffixes.items() if len(s) == 2)


def prune(folder, keep=KEEP):
    """Keep the newest ``keep`` complete snapshots (state and weights); remove older
    ones and strays: weights whose state was never written (a process killed between
    the two renames) older than the newest complete snapshot."""
    found, complete = snapshot_files(folder)
    kept = set(complete[-keep:])
    newest = complete[-1] if complete else -1
    for p in found:
        i = snapshot_iter(p)
        if i not in kept and i <= newest:
            p.unlink(missing_ok=True)


def last_snapshot(out, say=None):
    """The newest intact snapshot's .solverstate in out/snapshots (its state parses and
    its weights are a whole caffemodel), or None. A damaged newer one is passed over,
    and ``say`` is told which."""
    _, complete = snapshot_files(out / "snapshots")
    for i in reversed(complete):
        path = out / "snapshots" / f"train_iter_{i}.solverstate"
        try:
            state = read_solverstate(path)
            caffemodel.read_shapes(state_weights(path, state))
        except FcnError as e:
            if say:
                say(f"note: passing over a damaged snapshot ({e})")
            continue
        return path
    return None


def state_weights(path, state):
    """The weights a .solverstate restores, found as Caffe finds them (patch 0015):
    its learned_net relative to the state's folder; an absolute one (older states)
    from beside the state when that file is there."""
    learned = Path(state.learned_net)
    beside = Path(path).parent / learned.name
    if not learned.is_absolute():
        return Path(path).parent / learned
    return beside if beside.is_file() else learned


def read_solverstate(path):
    """The parsed .solverstate, or one line saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--resume: {path} not found")
    data = path.read_bytes()
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise UserError(f"--resume: {path} is not a Caffe .solverstate "
                            f"({len(data)} bytes)") from None
    if not data or not state.HasField("iter") or not state.history:
        raise UserError(f"--resume: {path} is not a complete Caffe .solverstate "
                            f"({len(data)} bytes, {len(state.history)} history blobs)")
    if not state.learned_net:
        raise UserError(f"--resume: {path} names no weights file (learned_net)")
    if not state_weights(path, state).is_file():
        raise UserError(f"--resume: {path} refers to {state_weights(path, state)}, "
                            "which is missing")
    return state


def blob_proto_shape(b):
    if b.HasField("shape"):
        return tuple(b.shape.dim)
    return (b.num, b.channels, b.height, b.width)


def check_state_fits(path, state, net, name):
    """Caffe aborts on a state whose momentum history or weights do not fit the
    solver's net; say which instead. One history blob per parameter blob (SGD)."""
    want = [tuple(b.data.shape) for blobs in net.params.values() for b in blobs]
    got = [blob_proto_shape(h) for h in state.history]
    if len(got) != len(want):
        raise UserError(f"--resume: {path} has {len(got)} history blobs, {name}'s net has "
                            f"{len(want)} parameter blobs; it is a state of another model, "
                            "or damaged")
    names = [(k, i) for k, blobs in net.params.items() for i in range(len(blobs))]
    for (k, i), g, w in zip(names, got, want):
        if not caffemodel.same_shape(w, g):
            raise UserError(f"--resume: {path} has history {list(g)} for {k}[{i}], the "
                                f"net has {list(w)}; it is a state of another model")
    try:
        caffemodel.check_fits(state_weights(path, state), net, complete=True)
    except caffemodel.WeightsError as e:
        raise UserError(f"--resume: {path}'s weights: {e}") from None



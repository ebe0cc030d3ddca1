"""Training behind every model directory's solve.py.

    python voc-fcn8s/solve.py [--gpu N | --cpu] [--weights W] [--iters N] [--test-interval N]
                              [--data-root R] [--out D] [--resume SOLVERSTATE]

As in the release: start from the model's initialisation (the classifier's FCN
form for 32s / at-once / AlexNet, the trained coarser net for 16s and 8s, the
trained single-modality nets for late fusion), fix every deconvolution to
bilinear interpolation, and train with the model's solver, scoring the
evaluation split every ``--test-interval`` iterations. Everything a run makes
goes to ``--out`` (default out/<model>/): solver.prototxt, train_log.jsonl
(smoothed loss), metrics.jsonl (one record per scoring), progress.png, the
latest snapshots in snapshots/ and final.caffemodel at the end. Ctrl-C or
SIGTERM stops after the current iteration with a snapshot; --resume continues
from one (checked against the net first). A bad image or label stops with a
snapshot too; a loss that is no longer finite stops without one, naming the
last finite snapshot.
"""
import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from pathlib import Path

import cli
import files
import numpy as np
from errors import FcnError
from progress import Progress, fmt_time

REPO = Path(__file__).resolve().parent
KEEP_SNAPSHOTS = 3
ESTIMATE_AFTER = 10       # iterations timed before the estimate of the whole run is printed


def parse_args(name, argv):
    p = argparse.ArgumentParser(prog=f"{name}/solve.py", description=f"Train {name}.")
    cli.add_device_flags(p)
    p.add_argument("--weights", help="initial weights (default: the model's initialisation; "
                                     "two comma-separated files for late fusion)")
    p.add_argument("--iters", type=int, help="train until this iteration (default: the "
                                              "release's count for the model)")
    p.add_argument("--test-interval", type=int, help="score every N iterations")
    p.add_argument("--data-root", help="data root (default: $FCN_DATA, else data/; "
                                       "see layers.data_root)")
    p.add_argument("--out", help=f"output folder (default: out/{name})")
    p.add_argument("--resume", help="a .solverstate written by an earlier run")
    p.add_argument("--display", type=int, default=20,
                   help="progress line and loss record every N iterations")
    p.add_argument("--base-lr", type=float, help="override the solver's base_lr")
    p.add_argument("--momentum", type=float, help="override the solver's momentum")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="stop after this many minutes (scoring included), score, and save")
    p.add_argument("--from-scratch", action="store_true",
                   help="no initial weights: Caffe's fillers (the random-init control)")
    return p.parse_args(argv)


def main(argv=None, model_dir=None):
    """The entry point of every MODEL/solve.py: the model is the folder of the
    script that runs (sys.argv[0]) unless ``model_dir`` names it."""
    name = Path(model_dir or Path(sys.argv[0]).resolve().parent).name
    return cli.run(lambda a: train(name, a), argv, prog=f"{name}/solve.py")


# ---------------------------------------------------------------------------
# Initial weights


def missing_trained(source):
    m = source.released_weights
    got = (f", or get the released weights with 'python prepare.py get weights {source.name}'"
           if m else "")
    return (f"train {source.name} first ({solve_py(source.name)} writes "
            f"{rel(source.our_weights)}){got}")


rel = cli.shown


def solve_py(name):
    """The command that trains ``name``, as typed from the working directory."""
    return f"python {cli.shown(REPO / name / 'solve.py')}"


def initial_weights(model, given):
    """[(weights path, how it is used)] for the model's initialisation; one line if
    a file is missing, naming it and how to make or get it."""
    import nets
    kind, what = model.init_from
    if kind == "streams":
        files = given.split(",") if given else [nets.MODELS[s].weights() for s in what]
        if len(files) != len(what):
            raise cli.UserError(f"--weights for {model.name} takes two files, "
                                f"'{what[0]}.caffemodel,{what[1]}.caffemodel'")
        for f, s in zip(files, what):
            if f is None:
                raise cli.UserError(f"missing initial weights for the {s} stream: "
                                    + missing_trained(nets.MODELS[s]))
        return list(zip(files, what))
    if given:
        return [(given, "given")]
    if kind == "classifier":
        c = nets.CLASSIFIERS[what]
        path = c.dir / c.fcn_init
        if not path.is_file():
            make = (f"'python prepare.py get weights {what}' downloads the classifier and makes "
                    "them" if c.url else
                    f"make them with 'python surgery.py {what}' from {rel(c.dir / c.weights)} "
                    f"({c.how_to_get()})")
            raise cli.UserError(f"missing initial weights {rel(path)}: {make}")
        return [(path, kind)]
    source = nets.MODELS[what]
    path = source.weights()
    if path is None:
        raise cli.UserError(f"missing initial weights for {model.name}: {missing_trained(source)}")
    return [(path, kind)]


def initialise(net, model, weights):
    """Load the initial weights into the training net, by layer name."""
    import builder
    import caffemodel
    import nets
    import surgery
    for path, how in weights:
        path = Path(path)
        if how in nets.MODELS:                                   # a late-fusion stream
            src_model = nets.MODELS[how]
            src = surgery.load_net(src_model.net("deploy"), path)
            surgery.transplant(net, src, suffix=src_model.modality)
            del src
            continue
        shapes = caffemodel.read_shapes(path)
        if model.modality == "color-d" and "conv1_1_bgrd" not in shapes:
            # from the colour backbone: everything but conv1, then conv1 + a depth channel
            src = surgery.load_net(builder.fcn_backbone(model.backbone), path)
            surgery.transplant(net, src)
            surgery.color_depth_conv1(net, src)
            del src
            continue
        shared = surgery.copy_weights(net, path, complete=False)
        print(f"initialised {len(shared)} layers from {rel(path)}")


# ---------------------------------------------------------------------------
# Solver, snapshots, logs


def make_solver(model, out, display, base_lr=None, momentum=None, data_root=None):
    """An SGDSolver from the model's solver.prototxt, its train and evaluation nets
    written to ``out`` with the data root in their data layers' param_str, and
    snapshots going to a scratch folder (snapshot() moves them into place)."""
    import caffe
    import layers
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    s = text_format.Parse((model.dir / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    root = layers.data_root(data_root, model.data_needs())
    s.train_net = str(files.write_atomic(out / model.files[0], lambda tmp: tmp.write_text(
        str(model.data_net("train", data_root=root)))))
    del s.test_net[:]
    s.test_net.append(str(files.write_atomic(out / model.files[1], lambda tmp: tmp.write_text(
        str(model.data_net("eval", data_root=root))))))
    scratch = out / ".snapshot-tmp"        # what a run killed while snapshotting left
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)   # Caffe CHECKs it is writable
    s.snapshot_prefix = str(scratch / "train")
    s.display = 0
    if base_lr is not None:
        s.base_lr = base_lr
    if momentum is not None:
        s.momentum = momentum
    path = files.write_atomic(out / "solver.prototxt", lambda tmp: tmp.write_text(str(s)))
    return caffe.SGDSolver(str(path))


def snapshot(solver, out):
    """Caffe's snapshot, made atomic: written to a scratch folder, then renamed into
    out/snapshots/, the weights first (the state names them by file name, relative
    to itself: patch 0015). Checks first that the disk has room for it: Caffe aborts
    the process when a write fails. Keeps the last KEEP_SNAPSHOTS; returns the
    .solverstate path."""
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


def prune(folder, keep=KEEP_SNAPSHOTS):
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
    import caffemodel
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
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    path = Path(path)
    if not path.is_file():
        raise cli.UserError(f"--resume: {path} not found")
    data = path.read_bytes()
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise cli.UserError(f"--resume: {path} is not a Caffe .solverstate "
                            f"({len(data)} bytes)") from None
    if not data or not state.HasField("iter") or not state.history:
        raise cli.UserError(f"--resume: {path} is not a complete Caffe .solverstate "
                            f"({len(data)} bytes, {len(state.history)} history blobs)")
    if not state.learned_net:
        raise cli.UserError(f"--resume: {path} names no weights file (learned_net)")
    if not state_weights(path, state).is_file():
        raise cli.UserError(f"--resume: {path} refers to {state_weights(path, state)}, "
                            "which is missing")
    return state


def blob_proto_shape(b):
    if b.HasField("shape"):
        return tuple(b.shape.dim)
    return (b.num, b.channels, b.height, b.width)


def check_state_fits(path, state, net, name):
    """Caffe aborts on a state whose momentum history or weights do not fit the
    solver's net; say which instead. One history blob per parameter blob (SGD)."""
    import caffemodel
    want = [tuple(b.data.shape) for blobs in net.params.values() for b in blobs]
    got = [blob_proto_shape(h) for h in state.history]
    if len(got) != len(want):
        raise cli.UserError(f"--resume: {path} has {len(got)} history blobs, {name}'s net has "
                            f"{len(want)} parameter blobs; it is a state of another model, "
                            "or damaged")
    names = [(k, i) for k, blobs in net.params.items() for i in range(len(blobs))]
    for (k, i), g, w in zip(names, got, want):
        if not caffemodel.same_shape(w, g):
            raise cli.UserError(f"--resume: {path} has history {list(g)} for {k}[{i}], the "
                                f"net has {list(w)}; it is a state of another model")
    try:
        caffemodel.check_fits(state_weights(path, state), net, complete=True)
    except caffemodel.WeightsError as e:
        raise cli.UserError(f"--resume: {path}'s weights: {e}") from None


def append_jsonl(path, record):
    import score
    files.append_line(path, json.dumps(score.json_safe(record)))


def read_jsonl(path):
    """A log's records; a damaged tail is dropped, with a note."""
    return files.read_jsonl(path, say=print)


def drop_records_after(path, it):
    """Resuming at iteration ``it`` replaces what the earlier run logged after it (a
    process killed between scoring and its snapshot logged a record it will log again)."""
    records = read_jsonl(path)
    kept = [r for r in records if r["iter"] <= it]
    if len(kept) != len(records):
        files.write_atomic(path, lambda tmp: tmp.write_text(
            "".join(json.dumps(r) + "\n" for r in kept)))
    return len(records) - len(kept)


def plot(out, title):
    """progress.png: smoothed loss and mean IU over iterations, from the logs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    losses, scores = read_jsonl(out / "train_log.jsonl"), read_jsonl(out / "metrics.jsonl")
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if losses:
        a.plot([r["iter"] for r in losses], [r["loss"] for r in losses], lw=1)
    a.set_ylabel("training loss (smoothed)")
    a.set_title(title)
    if scores:
        b.plot([r["iter"] for r in scores], [100 * (r["mean_iu"] or 0) for r in scores], "o-")
    b.set_ylabel("mean IU (%)")
    b.set_xlabel("iteration")
    fig.tight_layout()
    files.write_atomic(out / "progress.png", lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


class TrainingProgress(Progress):
    """Progress of SGD iterations on stdout, with the smoothed loss, against what
    ends the run: the iteration target, or the time budget when that comes first."""

    def __init__(self, start, total, window=20, deadline=None):
        super().__init__(total, start, stream=sys.stdout)
        self.deadline = deadline
        self.losses = deque(maxlen=window)

    def add(self, it, loss):
        self.done = it
        self.losses.append(loss)

    @property
    def smoothed(self):
        return float(np.mean(self.losses)) if self.losses else float("nan")

    def line(self, it):
        now, eta = time.time(), self.eta
        where = f"iter {it}/{self.total}"
        if self.deadline is not None and self.deadline - now < eta:
            eta = max(self.deadline - now, 0)
            where = (f"iter {it} | {fmt_time(now - self.t0)} of the "
                     f"{fmt_time(self.deadline - self.t0)} budget")
        return (f"{where} | {self.rate:.2f} it/s | loss {self.smoothed:.4g} "
                f"(mean of {len(self.losses)}) | ETA {fmt_time(eta) if eta != float('inf') else '?'}")

    def estimate(self, it, interval, n_eval):
        """One line: how long the rest of the run takes on this machine, from the
        iterations timed so far (a scoring image costs about a third of an SGD step:
        one forward pass against forward, backward and update)."""
        step = 1 / self.rate
        scorings = self.total // interval - it // interval + (self.total % interval != 0)
        left = step * ((self.total - it) + scorings * n_eval / 3)
        if self.deadline is not None and self.deadline - time.time() < left:
            return (f"estimate: the {fmt_time(self.deadline - self.t0)} time budget ends this "
                    f"run, at about iteration {it + int((self.deadline - time.time()) / step)}")
        return (f"estimate: {fmt_time(left)} for the {self.total - it} iterations left and "
                f"{scorings} scorings, at {step:.2f} s per iteration measured here")


# ---------------------------------------------------------------------------
# The loop


def check_args(args, model):
    """Every flag checked before any work; returns (output folder, scoring interval)."""
    args.device = cli.use_device(args.gpu, args.cpu)   # refused here, said once work starts
    for flag in ("iters", "test_interval", "display"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise cli.UserError(f"--{flag.replace('_', '-')} must be at least 1, got {v}")
    cli.finite("--time-budget", args.time_budget, low=0, low_open=True)
    cli.finite("--base-lr", args.base_lr, low=0, low_open=True)
    cli.finite("--momentum", args.momentum, low=0, high=1, high_open=True)
    if args.from_scratch and (args.weights or args.resume):
        raise cli.UserError("--from-scratch takes no --weights or --resume")
    if args.data_root and not Path(args.data_root).is_dir():
        raise cli.UserError(f"--data-root {args.data_root}: no such folder")
    out = cli.output_dir(Path(args.out).resolve() if args.out else REPO / "out" / model.name,
                         "--out")
    return out, args.test_interval or model.test_interval


class Stop:
    """Ctrl-C or SIGTERM: stop after the current iteration with a snapshot; a second
    one quits at once."""

    def __init__(self):
        self.asked = False
        self.previous = {}

    def __call__(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{what}: stopping after this iteration with a snapshot "
              "(again to quit without one)", flush=True)

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


def train(name, argv):
    import nets
    if name not in nets.MODELS:
        raise cli.UserError(f"{name} is not a model directory; run python MODEL/solve.py "
                            f"(models: {', '.join(nets.MODELS)})")
    args = parse_args(name, argv)
    model = nets.MODELS[name]
    if args.iters is None:
        args.iters = model.train_iters
    out, interval = check_args(args, model)
    with files.locked(out, "--out"):
        files.claim_folder(out, "--out", "solve.py")
        return run(name, model, args, out, interval)


def finish(args, state, out):
    """A state at the target iteration: a run stopped (or killed) after its last
    snapshot, before writing the final weights. Those weights are the snapshot's."""
    import caffemodel
    weights = state_weights(args.resume, state)
    caffemodel.read_shapes(weights)
    files.need_space(out, weights.stat().st_size, "the final weights")
    final = files.write_atomic(out / "final.caffemodel",
                               lambda tmp: shutil.copyfile(weights, tmp))
    print(f"{rel(args.resume)} is at iteration {state.iter}, the last one: its weights are "
          f"the final ones; weights {rel(final)}")
    return 0


def run(name, model, args, out, interval):
    """Training once every argument is checked and the output folder is held."""
    import caffemodel
    import surgery
    state = read_solverstate(args.resume) if args.resume else None
    if state is not None and state.iter == args.iters:
        return finish(args, state, out)
    if state is not None and state.iter > args.iters:
        raise cli.UserError(f"--resume: the state is at iteration {state.iter}, "
                            f"past --iters {args.iters}")
    weights = None if args.resume or args.from_scratch else initial_weights(model, args.weights)
    for path, _ in weights or []:
        caffemodel.read_shapes(path)           # missing or damaged: say so before building nets

    print(args.device, flush=True)
    solver = make_solver(model, out, args.display, args.base_lr, args.momentum, args.data_root)
    if args.resume:
        check_state_fits(args.resume, state, solver.net, name)
        solver.restore(str(Path(args.resume).resolve()))
        dropped = sum(drop_records_after(out / f, solver.iter)
                      for f in ("metrics.jsonl", "train_log.jsonl"))
        print(f"resumed from {rel(args.resume)} at iteration {solver.iter}"
              + (f" ({dropped} log records after it replaced)" if dropped else ""))
    elif args.from_scratch:
        print("no initial weights: training from Caffe's fillers")
    else:
        initialise(solver.net, model, weights)
    surgery.interp(solver.net)           # fixed bilinear upsampling (lr_mult 0)
    test_net = solver.test_nets[0]
    test_net.share_with(solver.net)
    n_eval = len(test_net.layers[0].ids)
    deadline = time.time() + 60 * args.time_budget if args.time_budget else None
    bar = TrainingProgress(solver.iter, args.iters, deadline=deadline)
    print(f"training {name} from iteration {solver.iter} to {args.iters}"
          + (f" or for {args.time_budget:g} minutes" if deadline else "")
          + f", scoring {model.eval.split} ({n_eval} images) every {interval}; output in "
          f"{rel(out)}", flush=True)
    with Stop() as stop:
        try:
            ended = loop(solver, test_net, n_eval, model, args, out, interval, bar, stop)
        except files.NoSpace as e:     # checked before each snapshot, or a log line
            last = last_snapshot(out)
            raise cli.UserError(f"{e}; stopped at iteration {solver.iter}" + (
                f"; the last snapshot is {rel(last)}: {solve_py(name)} --resume {rel(last)}"
                if last else "")) from None
        except FcnError as e:        # a bad image or label, from a data layer
            state_path = snapshot(solver, out)
            raise cli.UserError(f"{e}; stopped at iteration {solver.iter} with a snapshot: fix "
                                f"it, then {solve_py(name)} --resume {rel(state_path)}") \
                from None
    if ended == "diverged":
        last = last_snapshot(out)
        raise cli.UserError(
            f"the training loss became {bar.losses[-1]} at iteration {solver.iter}; stopped "
            "without saving that state; "
            + (f"the last finite snapshot is {rel(last)} (resume from it with a lower --base-lr)"
               if last else "no snapshot was made before it: start again with a lower --base-lr"))
    if ended == "stopped":
        state_path = snapshot(solver, out)
        plot(out, name)
        print(f"stopped at iteration {solver.iter}; snapshot {rel(state_path)}; resume with: "
              f"{solve_py(name)} --resume {rel(state_path)}", file=sys.stderr)
        return 130
    final = surgery.save_atomic(solver.net, out / "final.caffemodel")
    if ended == "out of time":
        print(f"time budget of {args.time_budget:g} minutes reached")
    print(f"done: iteration {solver.iter}; weights {rel(final)}; metrics "
          f"{rel(out / 'metrics.jsonl')}; plot {rel(out / 'progress.png')}")
    return 0


def loop(solver, test_net, n_eval, model, args, out, interval, bar, stop):
    """SGD steps with progress, scoring and snapshots until the target, the budget
    (bar.deadline), a stop request or a non-finite loss; returns which ended it."""
    import score
    heads = score.heads_of(model)
    losses = [b for b in solver.net.outputs if b.startswith("loss")]
    while solver.iter < args.iters:
        if stop.asked:
            return "stopped"
        solver.step(1)
        it = solver.iter
        out_of_time = bar.deadline is not None and time.time() >= bar.deadline
        last = it == args.iters or out_of_time
        loss = sum(float(solver.net.blobs[b].data) for b in losses)
        bar.add(it, loss)
        if it == bar.start + ESTIMATE_AFTER and it < args.iters:
            bar.close()
            print(bar.estimate(it, interval, n_eval), flush=True)
        if not math.isfinite(loss):
            if bar.tty:
                print()
            return "diverged"
        if it % args.display == 0 or last:
            bar.show(bar.line(it))
            append_jsonl(out / "train_log.jsonl", {"iter": it, "loss": bar.smoothed})
        if it % interval == 0 or last:
            if bar.tty:
                print()
            t = time.time()
            hists, eval_loss = score.score_net(test_net, heads, n_eval)
            results = {label: score.metrics(hists[s]) for s, label, _, _ in heads}
            first = results[model.heads[0].label]
            record = {"iter": it, "train_loss": bar.smoothed, "eval_loss": eval_loss,
                      **first, "n_images": n_eval, "score_s": round(time.time() - t, 1),
                      "elapsed_s": round(time.time() - bar.t0, 1), "device": args.device.short}
            if len(heads) > 1:
                record["heads"] = results
            append_jsonl(out / "metrics.jsonl", record)
            print(f"iter {it} | {model.eval.split}: " + score.format_metrics(first)
                  + "".join(f" | {k}: mean IU {100 * v['mean_iu']:.2f}"
                            for k, v in list(results.items())[1:]), flush=True)
            plot(out, model.name)
            snapshot(solver, out)
        if out_of_time:
            return "out of time"
    return "done"

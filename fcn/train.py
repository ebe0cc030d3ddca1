"""Training: what every model directory's solve.py runs (main), and what other
commands train with (run).

    python voc-fcn8s/solve.py [--gpu N | --cpu] [--weights W] [--iters N] [--test-interval N]
                              [--data-root R] [--out D] [--resume SOLVERSTATE]

As in the release: start from the model's initialisation (fcn/initial.py: the
classifier's FCN form for 32s / at-once / AlexNet, the trained coarser net for 16s
and 8s, the trained single-modality nets for late fusion), fix every deconvolution to
bilinear interpolation, and train with the model's solver, scoring the evaluation
split every ``--test-interval`` iterations. Everything a run makes goes to ``--out``
(default out/<model>/): solver.prototxt, train_log.jsonl (smoothed loss),
metrics.jsonl (one record per scoring), progress.png, the latest snapshots in
snapshots/ and final.caffemodel at the end. Ctrl-C or SIGTERM stops after the
current iteration with a snapshot; --resume continues from one (checked against the
net first). A bad image or label stops with a snapshot too; a loss that is no longer
finite stops without one, naming the last finite snapshot.

Other commands train through ``run(model, Options(...))``, which returns a Result.
"""
import argparse
import json
import math
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import caffe
import matplotlib
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from fcn import caffemodel, cli, files, metrics, snapshots, zoo
from fcn.datasets import checked_root, data_root
from fcn.device import Device, use_device
from fcn.errors import FcnError, UserError
from fcn.initial import initial_weights, initialise, solve_py
from fcn.paths import OUT, shown
from fcn.progress import Progress, fmt_time, say
from fcn.surgery import interp

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

ESTIMATE_AFTER = 10       # iterations timed before the estimate of the whole run is printed


@dataclass
class Options:
    """How to train (solve.py's flags; None: the model's or the release's default)."""
    weights: Optional[str] = None        # two comma-separated files for late fusion
    iters: Optional[int] = None
    test_interval: Optional[int] = None
    data_root: Optional[str] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    display: int = 20
    base_lr: Optional[float] = None
    momentum: Optional[float] = None
    time_budget: Optional[float] = None  # minutes
    from_scratch: bool = False
    device: Optional[Device] = None      # None: fcn.device.use_device's default


@dataclass
class Result:
    """How a run ended: "done", "out of time", "finished" (a state already at the last
    iteration) or "stopped" (Ctrl-C / SIGTERM, with a snapshot to resume from)."""
    ended: str
    iteration: int
    out: Path
    final: Optional[Path] = None         # the final weights
    snapshot: Optional[Path] = None      # the state a stopped run left

    @property
    def exit_code(self):
        return 130 if self.ended == "stopped" else 0


def parse_args(name, argv):
    p = argparse.ArgumentParser(prog=f"{name}/solve.py", description=f"Train {name}.")
    cli.add_device_flags(p)
    p.add_argument("--weights", help="initial weights (default: the model's initialisation; "
                                     "two comma-separated files for late fusion)")
    p.add_argument("--iters", type=int, help="train until this iteration (default: the "
                                              "release's count for the model)")
    p.add_argument("--test-interval", type=int, help="score every N iterations")
    cli.add_data_root_flag(p)
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


def main(model_dir, argv=None):
    """The entry point of every MODEL/solve.py, which passes its own folder."""
    name = Path(model_dir).name
    return cli.run(lambda a: train(name, a), argv, prog=f"{name}/solve.py")


def train(name, argv):
    """solve.py's command line -> run(); its exit code."""
    if name not in zoo.MODELS:
        raise UserError(f"{name} is not a model directory; run python MODEL/solve.py "
                            f"(models: {', '.join(zoo.MODELS)})")
    args = parse_args(name, argv)
    device = use_device(args.gpu, args.cpu)            # refused here, said once work starts
    options = Options(**{k: v for k, v in vars(args).items() if k not in ("gpu", "cpu")},
                      device=device)
    return run(zoo.MODELS[name], options).exit_code


# ---------------------------------------------------------------------------
# Solver and logs


def make_solver(model, out, options):
    """An SGDSolver from the model's solver.prototxt, its train and evaluation nets
    written to ``out`` with the data root in their data layers' param_str, and
    snapshots going to a scratch folder (snapshots.snapshot moves them into place)."""
    s = text_format.Parse((model.dir / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    root = data_root(options.data_root, model.data_needs())
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
    if options.base_lr is not None:
        s.base_lr = options.base_lr
    if options.momentum is not None:
        s.momentum = options.momentum
    path = files.write_atomic(out / "solver.prototxt", lambda tmp: tmp.write_text(str(s)))
    return caffe.SGDSolver(str(path))


def append_jsonl(path, record):
    files.append_line(path, json.dumps(metrics.json_safe(record)))


def read_jsonl(path):
    """A log's records; a damaged tail is dropped, with a note."""
    return files.read_jsonl(path, say=say)


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
    """progress.png: smoothed loss and mean IU over iterations, from the logs (read
    without notes: a resume's read tells of a damaged line once, not every plot)."""
    losses, scores = (files.read_jsonl(out / f) for f in ("train_log.jsonl", "metrics.jsonl"))
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
                f"(mean of {len(self.losses)}) | ETA "
                f"{fmt_time(eta) if eta != float('inf') else '?'}")

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
        say(f"\n{what}: stopping after this iteration with a snapshot "
            "(again to quit without one)")

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------
# A run


def checked(model, options):
    """Every option checked before any work, the defaults filled in; returns the
    output folder."""
    for flag in ("iters", "test_interval", "display"):
        v = getattr(options, flag)
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {v}")
    cli.finite("--time-budget", options.time_budget, low=0, low_open=True)
    cli.finite("--base-lr", options.base_lr, low=0, low_open=True)
    cli.finite("--momentum", options.momentum, low=0, high=1, high_open=True)
    if options.from_scratch and (options.weights or options.resume):
        raise UserError("--from-scratch takes no --weights or --resume")
    checked_root(options.data_root, model.data_needs())
    if options.iters is None:
        options.iters = model.train_iters
    if options.test_interval is None:
        options.test_interval = model.test_interval
    if options.device is None:
        options.device = use_device()
    return cli.output_dir(Path(options.out).resolve() if options.out else OUT / model.name,
                          "--out")


def run(model, options):
    """Train ``model`` as ``options`` say: the one way every command trains. Holds the
    output folder for the run; returns a Result, raises FcnError (one line) for
    anything the user can fix."""
    out = checked(model, options)
    with files.locked(out, "--out"):
        files.claim_folder(out, "--out", "solve.py")
        return train_in(model, options, out)


def finish(model, options, state, out):
    """A state at the target iteration: a run stopped (or killed) after its last
    snapshot, before writing the final weights. Those weights are the snapshot's."""
    weights = snapshots.state_weights(options.resume, state)
    caffemodel.read_shapes(weights)
    files.need_space(out, weights.stat().st_size, "the final weights")
    final = files.write_atomic(out / "final.caffemodel",
                               lambda tmp: shutil.copyfile(weights, tmp))
    say(f"{shown(options.resume)} is at iteration {state.iter}, the last one: its weights are "
        f"the final ones; weights {shown(final)}")
    return Result("finished", state.iter, out, final)


def train_in(model, options, out):
    """Training once every option is checked and the output folder is held."""
    name = model.name
    state = snapshots.read_solverstate(options.resume) if options.resume else None
    if state is not None and state.iter == options.iters:
        return finish(model, options, state, out)
    if state is not None and state.iter > options.iters:
        raise UserError(f"--resume: the state is at iteration {state.iter}, "
                            f"past --iters {options.iters}")
    weights = None if options.resume or options.from_scratch else \
        initial_weights(model, options.weights)
    for path, _ in weights or []:
        caffemodel.read_shapes(path)           # missing or damaged: say so before building nets

    say(options.device)
    solver = make_solver(model, out, options)
    if options.resume:
        snapshots.check_state_fits(options.resume, state, solver.net, name)
        solver.restore(str(Path(options.resume).resolve()))
        dropped = sum(drop_records_after(out / f, solver.iter)
                      for f in ("metrics.jsonl", "train_log.jsonl"))
        say(f"resumed from {shown(options.resume)} at iteration {solver.iter}"
            + (f" ({dropped} log records after it replaced)" if dropped else ""))
    elif options.from_scratch:
        say("no initial weights: training from Caffe's fillers")
    else:
        initialise(solver.net, model, weights)
    interp(solver.net)           # fixed bilinear upsampling (lr_mult 0)
    test_net = solver.test_nets[0]
    test_net.share_with(solver.net)
    n_eval = len(test_net.layers[0].ids)
    deadline = time.time() + 60 * options.time_budget if options.time_budget else None
    bar = TrainingProgress(solver.iter, options.iters, deadline=deadline)
    say(f"training {name} from iteration {solver.iter} to {options.iters}"
        + (f" or for {options.time_budget:g} minutes" if deadline else "")
        + f", scoring {model.eval.split} ({n_eval} images) every {options.test_interval}; "
        f"output in {shown(out)}")
    with Stop() as stop:
        try:
            ended = loop(solver, test_net, n_eval, model, options, out, bar, stop)
        except files.NoSpace as e:     # checked before each snapshot, or a log line
            last = snapshots.last_snapshot(out)
            raise UserError(f"{e}; stopped at iteration {solver.iter}" + (
                f"; the last snapshot is {shown(last)}: {solve_py(name)} --resume {shown(last)}"
                if last else "")) from None
        except FcnError as e:        # a bad image or label, from a data layer
            state_path = snapshots.snapshot(solver, out)
            raise UserError(f"{e}; stopped at iteration {solver.iter} with a snapshot: fix "
                                f"it, then {solve_py(name)} --resume {shown(state_path)}") \
                from None
    if ended == "diverged":
        last = snapshots.last_snapshot(out)
        raise UserError(
            f"the training loss became {bar.losses[-1]} at iteration {solver.iter}; stopped "
            "without saving that state; "
            + (f"the last finite snapshot is {shown(last)} (resume from it with a lower "
               "--base-lr)" if last else
               "no snapshot was made before it: start again with a lower --base-lr"))
    if ended == "stopped":
        state_path = snapshots.snapshot(solver, out)
        plot(out, name)
        print(f"stopped at iteration {solver.iter}; snapshot {shown(state_path)}; resume with: "
              f"{solve_py(name)} --resume {shown(state_path)}", file=sys.stderr)
        return Result("stopped", solver.iter, out, snapshot=state_path)
    final = caffemodel.save_atomic(solver.net, out / "final.caffemodel")
    if ended == "out of time":
        say(f"time budget of {options.time_budget:g} minutes reached")
    say(f"done: iteration {solver.iter}; weights {shown(final)}; metrics "
        f"{shown(out / 'metrics.jsonl')}; plot {shown(out / 'progress.png')}")
    return Result(ended, solver.iter, out, final)


def loop(solver, test_net, n_eval, model, options, out, bar, stop):
    """SGD steps with progress, scoring and snapshots until the target, the budget
    (bar.deadline), a stop request or a non-finite loss; returns which ended it."""
    losses = [b for b in solver.net.outputs if b.startswith("loss")]
    interval = options.test_interval
    while solver.iter < options.iters:
        if stop.asked:
            return "stopped"
        solver.step(1)
        it = solver.iter
        out_of_time = bar.deadline is not None and time.time() >= bar.deadline
        last = it == options.iters or out_of_time
        loss = sum(float(solver.net.blobs[b].data) for b in losses)
        bar.add(it, loss)
        if it == bar.start + ESTIMATE_AFTER and it < options.iters:
            bar.close()
            say(bar.estimate(it, interval, n_eval))
        if not math.isfinite(loss):
            if bar.tty:
                print()
            return "diverged"
        if it % options.display == 0 or last:
            bar.show(bar.line(it))
            append_jsonl(out / "train_log.jsonl", {"iter": it, "loss": bar.smoothed})
        if it % interval == 0 or last:
            if bar.tty:
                print()
            t = time.time()
            results, eval_loss = metrics.score_net(test_net, model, n_eval)
            first = results[model.heads[0].label]
            record = {"iter": it, "train_loss": bar.smoothed, "eval_loss": eval_loss,
                      **first, "n_images": n_eval, "score_s": round(time.time() - t, 1),
                      "elapsed_s": round(time.time() - bar.t0, 1),
                      "device": options.device.short}
            if len(results) > 1:
                record["heads"] = results
            append_jsonl(out / "metrics.jsonl", record)
            say(f"iter {it} | {model.eval.split}: " + metrics.format_metrics(first)
                + "".join(f" | {k}: mean IU {100 * v['mean_iu']:.2f}"
                          for k, v in list(results.items())[1:]))
            plot(out, model.name)
            snapshots.snapshot(solver, out)
        if out_of_time:
            return "out of time"
    return "done"

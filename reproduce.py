"""Reproduce the paper for one dataset with one command, ending in a table.

    python reproduce.py voc|nyud|siftflow|pascalcontext [--released] [--dry-run]
                        [--models M,M] [--redo STAGE] [--gpu N | --cpu]
                        [--data-root R] [--out D] [--trust-new-downloads]

The steps, in the paper's and release's order, each skipped when its output is
there and verified:
  data     prepare.py get (download, unpack, derive), then prepare.py check; a
           dataset that passed is stamped and not checked again
  weights  the ILSVRC classifier(s), checksummed, and their FCN initialisation
           (surgery); with --released, the released caffemodels instead
  train    one stage per model, as the release trains it: its initialisation
           (the classifier, or the stage before: 32s -> 16s -> 8s, colour and HHA
           -> late fusion), its solver, its iteration count and scoring interval
           (fcn/zoo.py). A stage that was stopped (Ctrl-C, SIGTERM, a killed machine)
           continues from its last snapshot; a finished one is never redone
           unless --redo names it (or a stage it starts from)
  score    every final model on the evaluation split
  table    OUT/<dataset>/results.md and results.json (results-released.* with
           --released): our pixel accuracy, mean accuracy, mean IU, f.w. IU (and
           SIFT Flow's geometric accuracy) beside the release's and the paper's
           figures, with the difference

Before any work the plan is printed: every step, whether it is done, and how
long the rest takes on this machine, from a few training iterations timed here
(cached in OUT/speed.json); --dry-run prints only that. Everything goes to OUT
(default out/reproduce/): OUT/<dataset>/<model>/ is each stage's solve.py
output; the data goes to the data root, the weights where the commands look.
"""
import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import prepare
import training
from fcn import caffemodel, cli, downloads, files, metrics, snapshots, zoo
from fcn.datasets import DATASETS, check_reader, data_root
from fcn.device import use_device
from fcn.errors import DataError
from fcn.paths import OUT, REPO
from fcn.progress import fmt_time, say
TIMED_ITERS = 2                 # training iterations timed for the estimate (after one warm-up)


@dataclass(frozen=True)
class Pipeline:
    data: Tuple[str, ...]       # prepare.py datasets, in the order they are made
    models: Tuple[str, ...]     # zoo.MODELS, in training order


PIPELINES = {
    "voc": Pipeline(("sbdd", "voc"), ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce",
                                      "voc-fcn-alexnet")),
    "nyud": Pipeline(("nyud",), ("nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-hha",
                                 "nyud-fcn32s-color-d")),
    "siftflow": Pipeline(("siftflow",), ("siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s")),
    "pascalcontext": Pipeline(("pascalcontext",), ("pascalcontext-fcn32s", "pascalcontext-fcn16s",
                                                   "pascalcontext-fcn8s")),
}

# Figures to compare with, in percent. The release's README gives mean IU on
# seg11valid for its VOC models; the paper the four metrics of its tables (SIFT
# Flow also geometric accuracy). Each row says where it comes from and whether it
# was checked against a readable copy of that source (docs/reproduce.md).
RELEASE = {"voc-fcn32s": 63.6, "voc-fcn16s": 65.0, "voc-fcn8s": 65.5, "voc-fcn8s-atonce": 65.4,
           "voc-fcn-alexnet": 48.0}
PAPER_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "geo_accuracy")


@dataclass(frozen=True)
class Figures:
    values: Tuple[float, ...]   # in PAPER_KEYS order
    source: str                 # the table they come from
    checked: str                # what was checked against a readable copy, or "unverified"


PAMI_VOC = ("PAMI 2016, VOC2011 seg11valid", "mean IU: the release's README; the other "
            "three unverified (no readable copy of the PAMI tables found)")
PAMI_UNVERIFIED = "unverified: no readable copy of the PAMI tables found"
PAPER = {
    "voc-fcn32s": Figures((90.5, 76.5, 63.6, 83.5), *PAMI_VOC),
    "voc-fcn16s": Figures((91.0, 78.1, 65.0, 84.3), *PAMI_VOC),
    "voc-fcn8s": Figures((91.2, 77.6, 65.5, 84.5), *PAMI_VOC),
    "voc-fcn8s-atonce": Figures((91.1, 78.5, 65.4, 84.4), *PAMI_VOC),
    "nyud-fcn32s-color": Figures((61.8, 44.7, 31.6, 46.0), "PAMI 2016, NYUDv2", PAMI_UNVERIFIED),
    "nyud-fcn32s-hha": Figures((58.3, 35.7, 25.2, 41.7), "PAMI 2016, NYUDv2", PAMI_UNVERIFIED),
    "nyud-fcn32s-color-d": Figures((62.1, 44.8, 31.7, 46.3), "PAMI 2016, NYUDv2",
                                   PAMI_UNVERIFIED),
    "nyud-fcn32s-color-hha": Figures((65.3, 44.0, 33.3, 48.6), "PAMI 2016, NYUDv2",
                                     PAMI_UNVERIFIED),
    "siftflow-fcn16s": Figures((85.2, 51.7, 39.5, 76.1, 94.3), "CVPR 2015 Table 5 (SIFT Flow)",
                               "all five: CVPR 2015 Table 5"),
    "pascalcontext-fcn32s": Figures((65.5, 49.1, 36.7, 50.9), "PAMI 2016, PASCAL-Context 59",
                                    PAMI_UNVERIFIED),
    "pascalcontext-fcn16s": Figures((66.9, 51.3, 38.4, 52.3), "PAMI 2016, PASCAL-Context 59",
                                    PAMI_UNVERIFIED),
    "pascalcontext-fcn8s": Figures((67.5, 52.3, 39.1, 53.0), "PAMI 2016, PASCAL-Context 59",
                                   PAMI_UNVERIFIED),
}


# ---------------------------------------------------------------------------
# Steps


@dataclass
class Step:
    kind: str                   # data, weights, train, score
    name: str
    done: bool
    what: str                   # one line: what it does or found
    seconds: Optional[float] = None


class Run:
    """One reproduce.py invocation: its arguments, folders and helpers."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.dataset = args.dataset
        self.pipeline = PIPELINES[args.dataset]
        self.root = cli.output_dir(data_root(args.data_root),
                                   "--data-root" if args.data_root else "the data root")
        self.out = cli.output_dir(Path(args.out).resolve() if args.out
                                  else OUT / "reproduce", "--out")
        self.dir = self.out / self.dataset
        self.models = [zoo.MODELS[m] for m in self.selected()]
        self.test = args.test_iters is not None
        self.forget = set()                     # stages --redo runs again

    def selected(self):
        """The models asked for (--models) and every model they start from."""
        if not self.args.models:
            return list(self.pipeline.models)
        want = [m.strip() for m in self.args.models.split(",") if m.strip()]
        bad = [m for m in want if m not in self.pipeline.models]
        if bad or not want:
            raise cli.UserError(f"--models {self.args.models}: models of {self.dataset} are "
                                f"{', '.join(self.pipeline.models)}")
        needed = set()

        def need(name):
            needed.add(name)
            for dep in () if self.args.released else zoo.MODELS[name].starts_from:
                need(dep)
        for m in want:
            need(m)
        return [m for m in self.pipeline.models if m in needed]

    def stage_dir(self, model):
        return self.dir / model.name

    def final(self, model):
        return self.stage_dir(model) / "final.caffemodel"

    def score_path(self, model):
        return self.dir / ("scores-released" if self.args.released else "scores") / \
            f"{model.name}.json"

    def iters(self, model):
        return self.args.test_iters or model.train_iters

    def interval(self, model):
        return max(self.args.test_iters // 2, 1) if self.test else model.test_interval

    def classifiers(self):
        return [zoo.CLASSIFIERS[b] for b in dict.fromkeys(
            m.init_from[1] for m in self.models if m.init_from[0] == "classifier")]

    def data_stamp(self, d):
        return self.root / DATASETS[d].dir / ".fcn-checked"


def read_stamp(path):
    """What a data stamp says ('train 8498, val 2857'), or None if it is not one."""
    def parse(text):
        text = text.strip()
        if not text or not all(p.rsplit(" ", 1)[-1].isdigit() for p in text.split(", ")):
            raise ValueError(text)
        return text
    return files.read_cache(path, parse)


def data_steps(run):
    for d in run.pipeline.data:
        stamp = read_stamp(run.data_stamp(d))
        done = stamp is not None and "data" not in run.forget
        yield Step("data", d, done, f"checked: {stamp}" if done else
                   f"prepare.py get {d} (download, unpack, derive), then check, into "
                   f"{run.root / DATASETS[d].dir}")


def weights_steps(run):
    if run.args.released:
        for m in run.models:
            if m.released_weights is None:
                continue
            have = m.released_weights.is_file()
            yield Step("weights", m.name, have,
                       f"{m.released_weights.name}" + (" (checksum checked again)" if have
                                                       else f" from {m.caffemodel_url}"))
        return
    for c in run.classifiers():
        init = c.dir / c.fcn_init
        done = init.is_file() and "weights" not in run.forget
        yield Step("weights", c.backbone, done, f"{init.relative_to(REPO)}" if done else
                   f"prepare.py get weights {c.backbone} ({c.url}, then surgery)")


def train_steps(run, speeds):
    if run.args.released:
        return
    for m in run.models:
        iters, interval = run.iters(m), run.interval(m)
        n_eval = eval_size(run, m)
        if run.final(m).is_file() and m.name not in run.forget:
            yield Step("train", m.name, True, f"{run.final(m).relative_to(run.out)}")
            continue
        state = None if m.name in run.forget else snapshots.last_snapshot(run.stage_dir(m), say)
        start = snapshots.snapshot_iter(state) if state else 0
        scorings = iters // interval - start // interval + (iters % interval != 0)
        step_s, image_s = speeds.get(speed_key(run, m), (None, None))
        seconds = None if step_s is None else \
            (iters - start) * step_s * m.iter_size + scorings * n_eval * image_s
        yield Step("train", m.name, False,
                   (f"resume at iteration {start}, " if start else "") +
                   f"{iters - start} iterations, {scorings} scorings of {n_eval} images"
                   + (f"; {step_s * m.iter_size:.2f} s per iteration, {image_s:.2f} s per "
                      "scored image, timed here" if step_s is not None else ""), seconds)


def score_steps(run, speeds):
    for m in run.models:
        if run.args.released and m.released_weights is None:
            continue
        path = run.score_path(m)
        current = path.is_file() and score_is_current(path, weights_of(run, m)) and \
            not run.forget & {"score", m.name}
        n = eval_size(run, m)
        image_s = speeds.get(speed_key(run, m), (None, None))[1]
        yield Step("score", m.name, current,
                   f"{path.relative_to(run.out)}" if current else
                   f"{m.eval.split}, {n} images", None if image_s is None else n * image_s)


def weights_of(run, model):
    return model.released_weights if run.args.released else run.final(model)


def eval_size(run, model):
    """Images of the evaluation split: the list's length when the data is there."""
    if read_stamp(run.data_stamp(model.eval.dataset)) is not None or run.test:
        try:
            return len(check_reader(model.eval.dataset, run.root).ids(model.eval.split))
        except DataError:             # (not there yet: the data step says what is wrong)
            pass
    return DATASETS[model.eval.dataset].splits[model.eval.split]


def plan(run, speeds):
    return [*data_steps(run), *weights_steps(run), *train_steps(run, speeds),
            *score_steps(run, speeds)]


def print_plan(run, steps, device):
    todo = [s for s in steps if not s.done]
    say(f"reproduce {run.dataset}{' --released' if run.args.released else ''} "
        f"(on the {str(device)[len('device: '):]}): {len(steps)} steps, "
        f"{len(steps) - len(todo)} done; output in {run.dir}")
    for s in steps:
        eta = f" - about {fmt_time(s.seconds)}" if s.seconds is not None and not s.done else ""
        say(f"  [{'done' if s.done else 'todo'}] {s.kind} {s.name}: {s.what}{eta}")
    timed = [s.seconds for s in todo if s.seconds is not None]
    untimed = [f"{s.kind} {s.name}" for s in todo if s.seconds is None]
    if timed:
        say(f"  estimate: {fmt_time(sum(timed))} of training and scoring on this machine"
            + (f", plus {len(untimed)} steps not timed (downloads, surgery)" if untimed else ""))


# ---------------------------------------------------------------------------
# Speed: a few training iterations timed on this machine


def speed_key(run, model):
    """Models that cost the same per iteration share a timing: the backbone and
    the number of streams (late fusion runs two); the heads add little."""
    size = "x".join(map(str, typical_size(run, model)))
    device = run.device.short
    return f"{model.backbone}|{2 if model.modality == 'color-hha' else 1}|{size}|{device}"


def typical_size(run, model):
    return (32, 32) if run.test else DATASETS[model.train.dataset].size


def time_model(model, hw):
    """(seconds per SGD step, seconds per scored image) of ``model`` at input size
    ``hw``: forward + backward of its deploy net (force_backward), one warm-up and
    TIMED_ITERS timed."""
    proto = model.net("deploy")
    proto.force_backward = True
    net = caffemodel.load_net(proto)
    for name in net.inputs:
        shape = list(net.blobs[name].data.shape)
        net.blobs[name].reshape(1, shape[1], *hw)
    net.reshape()
    fwd = bwd = 0.0
    for i in range(TIMED_ITERS + 1):
        t0 = time.perf_counter()
        net.forward()
        t1 = time.perf_counter()
        net.backward()
        t2 = time.perf_counter()
        if i:
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
    return (fwd + bwd) / TIMED_ITERS, fwd / TIMED_ITERS


def parse_speeds(text):
    """speed.json's timings; entries that are not two positive finite seconds are
    left out (timed again)."""
    table = json.loads(text)
    return {k: (float(v[0]), float(v[1])) for k, v in table.items()
            if isinstance(v, list) and len(v) == 2
            and all(isinstance(x, (int, float)) and 0 < x < float("inf") for x in v)}


def measure_speeds(run):
    """{speed key: (s per step, s per image)} for the models still to train or score,
    timed here once and kept in OUT/speed.json."""
    path = run.out / "speed.json"
    speeds = files.read_cache(path, parse_speeds) or {}
    todo = {}
    for m in run.models:
        key = speed_key(run, m)
        if key not in speeds and not (run.final(m).is_file() and
                                      read_score(run.score_path(m)) is not None):
            todo.setdefault(key, m)
    for key, m in todo.items():
        say(f"timing {m.name} at {'x'.join(map(str, typical_size(run, m)))} pixels "
            f"({TIMED_ITERS + 1} forward/backward passes) for the estimate")
        speeds[key] = time_model(m, typical_size(run, m))
    if todo:
        files.write_cache(path, json.dumps(speeds, indent=1) + "\n")
    return speeds


# ---------------------------------------------------------------------------
# Doing the steps


def do_data(run, d):
    """The dataset checked; downloaded, unpacked and derived first unless it is
    already complete (made by hand, or by an earlier prepare.py get)."""
    counts = not run.test
    if not (run.root / DATASETS[d].dir).is_dir() or prepare.check(d, run.root, out=lambda _: None,
                                                                  counts=counts):
        prepare.get(d, run.root, trust_new=run.args.trust_new_downloads)
    problems = prepare.check(d, run.root, counts=counts)
    if problems:
        for line in problems[:20]:
            say(f"problem: {line}")
        raise cli.UserError(f"{d}: {len(problems)} problem(s) in {run.root / DATASETS[d].dir} "
                            f"(python prepare.py check {d} lists them)")
    found = check_reader(d, run.root)
    sizes = ", ".join(f"{s} {len(found.ids(s))}" for s in DATASETS[d].splits)
    files.write_cache(run.data_stamp(d), sizes + "\n")


def do_weights(run, name):
    prepare.get_weights(name, run.args.trust_new_downloads, run.args.data_root)


def do_train(run, model):
    """One training stage, as solve.py trains it (training.run): resumed from its last
    intact snapshot if it has one, else started from its initialisation (a fresh start
    clears the logs of a start that never reached a snapshot)."""
    out = run.stage_dir(model)
    options = training.Options(out=str(out), iters=run.iters(model),
                               test_interval=run.interval(model), data_root=str(run.root),
                               device=run.device)
    state = snapshots.last_snapshot(out, say)
    if state is not None:
        options.resume = str(state)
    else:
        for log in ("metrics.jsonl", "train_log.jsonl"):
            (out / log).unlink(missing_ok=True)
        if model.starts_from:          # (from a classifier: solve.py's default)
            options.weights = ",".join(str(run.final(zoo.MODELS[s])) for s in model.starts_from)
    result = training.run(model, options)
    if result.exit_code != 0:
        raise Stopped(result.exit_code)


class Stopped(Exception):
    """A stage stopped by Ctrl-C or SIGTERM after its snapshot."""


def read_score(path):
    """A score record (scores/<model>.json), or None when it is damaged."""
    def parse(text):
        record = json.loads(text)
        if not isinstance(record, dict) or not isinstance(record.get("heads"), dict) or \
                not isinstance(record.get("n_images"), int):
            raise ValueError(path)
        return record
    return files.read_cache(path, parse)


def score_is_current(path, weights):
    record = read_score(path)
    try:
        st = Path(weights).stat()
    except OSError:
        return False
    return record is not None and record.get("weights_stat") == [st.st_size, st.st_mtime_ns]


def do_score(run, model):
    weights = weights_of(run, model)
    net = caffemodel.load_net(model.data_net("eval", data_root=run.root), weights)
    n = len(net.layers[0].ids)
    results, _ = metrics.score_net(net, model, n, progress=metrics.progress_lines())
    st = Path(weights).stat()
    record = {"model": model.name, "split": model.eval.split, "n_images": n,
              "weights": str(weights), "weights_stat": [st.st_size, st.st_mtime_ns],
              "heads": results, "device": run.device.record()}
    files.write_cache(run.score_path(model),
                      json.dumps(metrics.json_safe(record), indent=1) + "\n")
    say(f"  {model.name}: " + metrics.format_metrics(results[model.heads[0].label]))


# ---------------------------------------------------------------------------
# The table


def row(run, model):
    """Our figures (percent) beside the release's and the paper's, for one model."""
    record = read_score(run.score_path(model))
    first = record["heads"][model.heads[0].label]
    ours = {k: None if first[k] is None else 100 * first[k] for k in PAPER_KEYS[:4]}
    if "geo" in record["heads"]:
        geo = record["heads"]["geo"]["pixel_accuracy"]
        ours["geo_accuracy"] = None if geo is None else 100 * geo
    figures = PAPER.get(model.name)
    paper = dict(zip(PAPER_KEYS, figures.values)) if figures else {}
    diff = {k: round(ours[k] - v, 2) for k, v in paper.items()
            if ours.get(k) is not None}
    if "mean_iu" not in diff and model.name in RELEASE and ours["mean_iu"] is not None:
        diff["mean_iu_vs_release"] = round(ours["mean_iu"] - RELEASE[model.name], 2)
    return {"model": model.name, "split": record["split"], "n_images": record["n_images"],
            "weights": record["weights"], "ours": ours, "release": {"mean_iu": RELEASE.get(
                model.name)}, "paper": paper, "difference": diff,
            "paper_source": figures.source if figures else None,
            "paper_checked": figures.checked if figures else None}


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def write_table(run):
    rows = [row(run, m) for m in run.models if read_score(run.score_path(m)) is not None]
    geo = any("geo_accuracy" in r["ours"] for r in rows)
    keys = PAPER_KEYS if geo else PAPER_KEYS[:4]
    names = metrics.METRIC_NAMES
    what = "released weights" if run.args.released else "trained here"
    head = (["model", "images"] + [f"ours: {names[k]}" for k in keys] + ["release: mean IU"]
            + [f"paper: {names[k]}" for k in keys] + ["mean IU - paper"])
    lines = [f"# {run.dataset}: {what}, scored on the evaluation split", "",
             "Percent. Paper: Long, Shelhamer, Darrell (CVPR 2015, PAMI 2016; each row's "
             "table below); release: the README of fcn.berkeleyvision.org (mean IU on "
             "seg11valid).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r["difference"].get("mean_iu", r["difference"].get("mean_iu_vs_release"))
        d_s = "-" if d is None else f"{d:+.1f}" + ("" if "mean_iu" in r["difference"]
                                                   else " (vs release)")
        cells = ([r["model"], str(r["n_images"])] + [fmt(r["ours"].get(k)) for k in keys]
                 + [fmt(r["release"]["mean_iu"])] + [fmt(r["paper"].get(k)) for k in keys]
                 + [d_s])
        lines.append("| " + " | ".join(cells) + " |")
    sources = [f"- {r['model']}: {r['paper_source']} ({r['paper_checked']})"
               for r in rows if r["paper_source"]]
    notes = ["", "The paper's figures:", *sources] if sources else []
    stem = "results-released" if run.args.released else "results"
    md = files.write_atomic(run.dir / f"{stem}.md",
                            lambda tmp: tmp.write_text("\n".join(lines + notes) + "\n"))
    files.write_atomic(run.dir / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(
        {"dataset": run.dataset, "weights": what, "device": run.device.record(), "rows": rows},
        indent=1) + "\n"))
    return md, lines


# ---------------------------------------------------------------------------
# CLI


def redo(run, stage, dry_run=False):
    """Forget a finished stage (and the stages that start from it) so that it runs
    again: its outputs are removed, unless ``dry_run`` (then the plan only shows it).
    With --released nothing is trained, so a model's stage is its score: only that
    is forgotten, and no weights or snapshots are ever removed."""
    if stage not in {"data", "weights", "score", *run.pipeline.models}:
        raise cli.UserError(f"--redo {stage}: stages of {run.dataset} are data, weights, "
                            f"{', '.join(run.pipeline.models)}, score")
    forget = [stage]
    for m in () if run.args.released else run.pipeline.models:
        if any(d in forget for d in zoo.MODELS[m].starts_from):
            forget.append(m)                    # later stages started from a redone one
    run.forget = set(forget)
    what = (f"scoring {stage}'s released weights again" if run.args.released and
            stage in zoo.MODELS else f"training again {', '.join(forget)}"
            if len(forget) > 1 else f"{stage} again")
    say(f"--redo {stage}: {what}" + (" (--dry-run: nothing removed)" if dry_run else ""))
    if dry_run:
        return
    if stage == "data":
        for d in run.pipeline.data:
            run.data_stamp(d).unlink(missing_ok=True)
    elif stage == "weights" and not run.args.released:   # (released: checked every run)
        for c in run.classifiers():
            (c.dir / c.fcn_init).unlink(missing_ok=True)
    elif stage == "score":
        shutil.rmtree(run.score_path(run.models[0]).parent, ignore_errors=True)
    for m in forget:
        if m in zoo.MODELS:
            if not run.args.released:
                shutil.rmtree(run.stage_dir(zoo.MODELS[m]), ignore_errors=True)
            run.score_path(zoo.MODELS[m]).unlink(missing_ok=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=sorted(PIPELINES))
    p.add_argument("--released", action="store_true",
                   help="no training: download the released caffemodels and score them")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimate only")
    p.add_argument("--models", help="only these models (comma-separated) and those they "
                                    "start from")
    p.add_argument("--redo", metavar="STAGE",
                   help="run a finished stage again: data, weights, a model, or score")
    p.add_argument("--data-root", help="data root (default: $FCN_DATA, else data/)")
    p.add_argument("--out", help="output folder (default: out/reproduce)")
    p.add_argument("--trust-new-downloads", action="store_true",
                   help="accept downloads with nothing on record (their sha256 is printed)")
    cli.add_device_flags(p)
    # tests only: N iterations per stage, split sizes not enforced, timing at 32x32
    p.add_argument("--test-iters", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.test_iters is not None and args.test_iters < 1:
        raise cli.UserError("--test-iters must be at least 1")
    downloads.extra_table()                   # $FCN_CHECKSUMS checked before any work
    device = use_device(args.gpu, args.cpu)
    say(device)
    run = Run(args, device)
    with files.locked(run.out, "--out"):
        files.claim_folder(run.out, "--out", "reproduce.py")
        return reproduce(run, args, device)


def reproduce(run, args, device):
    """Plan, then every step, once the arguments are checked and the output folder held."""
    if args.redo:
        redo(run, args.redo, args.dry_run)
    speeds = measure_speeds(run)
    steps = plan(run, speeds)
    print_plan(run, steps, device)
    if args.dry_run:
        return 0
    t0 = time.time()
    try:
        for s in steps:
            if s.done and not (s.kind == "weights" and args.released):
                continue                # (released weights: their checksums checked again)
            say(f"== {s.kind} {s.name}")
            if s.kind == "data":
                do_data(run, s.name)
            elif s.kind == "weights":
                do_weights(run, s.name)
            elif s.kind == "train":
                do_train(run, zoo.MODELS[s.name])
            else:
                do_score(run, zoo.MODELS[s.name])
    except Stopped as e:
        say(f"reproduce.py: stopped; run the same command again to continue "
            f"({fmt_time(time.time() - t0)} of work this run)")
        return e.args[0]
    except KeyboardInterrupt:
        print("reproduce.py: interrupted; run the same command again to continue",
              file=sys.stderr)
        return 130
    md, lines = write_table(run)
    say("\n".join(lines[4:]))
    say(f"results: {md} and {md.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="reproduce.py"))

"""Reproduce the paper for one dataset with one command, ending in a table.

    python reproduce.py voc|nyud|siftflow|pascalcontext|all ... [--released] [--dry-run]
                        [--models M,M] [--redo STAGE] [--gpu N | --cpu] [--retime]
                        [--data-root R] [--out D] [--trust-new-downloads]
    ... --gpus 0,1,2,3 | --workers N     the steps that are ready at once, here
    ... --slurm [--partition P --account A --time T --slurm-template F]
    ... --status | --cancel              (SLURM: docs/reproduce.md)

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

The steps form a graph (each step after the steps it needs; fcn/schedule.py).
Before any work the plan is printed: every step, whether it is done, what it
needs, the critical path, and how long the rest takes on one device and on the
devices asked for, from a few training iterations timed here (cached in
OUT/speed.json with the machine's name); --dry-run prints only that. One step
after another in this process by default; with --gpus or --workers, the steps
that are ready at once, each a process of its own (--step, its log in OUT/logs);
with --slurm, one sbatch job per step with afterok dependencies. Everything goes to OUT
(default out/reproduce/): OUT/<dataset>/<model>/ is each stage's solve.py
output; the data goes to the data root, the weights where the commands look.
"""
import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from fcn import caffemodel, cli, downloads, files, metrics, preparation, schedule, snapshots, \
    train, weights, zoo
from fcn.datasets import DATASETS, check_reader, checked_root
from fcn.device import build_info, machine_name, use_device, visible_gpus
from fcn.errors import DataError, UserError
from fcn.paths import OUT, REPO
from fcn.paper import PAPER, PAPER_KEYS, PIPELINES, RELEASE
from fcn.progress import fmt_time, say
from fcn.schedule import Task

TIMED_ITERS = 2                 # training iterations timed for the estimate (after one warm-up)


# ---------------------------------------------------------------------------
# Steps


class Run:
    """One dataset of a reproduce.py invocation: its arguments, folders and helpers."""

    def __init__(self, args, device, dataset):
        self.args, self.device = args, device
        self.dataset = dataset
        self.pipeline = PIPELINES[dataset]
        self.root = checked_root(args.data_root, write=True)
        self.out = cli.output_dir(Path(args.out).resolve() if args.out
                                  else OUT / "reproduce", "--out")
        self.dir = self.out / self.dataset
        self.models = [zoo.MODELS[m] for m in self.selected()]
        self.test = args.test_iters is not None
        self.forget = set()                     # stages --redo runs again

    def selected(self):
        """The models asked for (--models, those of this dataset) and every model they
        start from."""
        if not self.args.models:
            return list(self.pipeline.models)
        want = [m for m in models_asked(self.args) if m in self.pipeline.models]
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


def models_asked(args):
    """--models as a list (checked against the datasets in main)."""
    return [m.strip() for m in (args.models or "").split(",") if m.strip()]


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
        deps = tuple(f"data/{n}" for n in DATASETS[d].needs if n in run.pipeline.data)
        yield Task(f"data/{d}", deps, done, f"checked: {stamp}" if done else
                   f"prepare.py get {d} (download, unpack, derive), then check, into "
                   f"{run.root / DATASETS[d].dir}", dataset=run.dataset)


def weights_steps(run):
    if run.args.released:
        for m in run.models:
            if m.released_weights is None:
                continue
            have = m.released_weights.is_file()
            yield Task(f"weights/{m.name}", (), have,
                       f"{m.released_weights.name}" + (" (checksum checked again)" if have
                                                       else f" from {m.caffemodel_url}"),
                       dataset=run.dataset)
        return
    for c in run.classifiers():
        init = c.dir / c.fcn_init
        done = init.is_file() and "weights" not in run.forget
        yield Task(f"weights/{c.backbone}", (), done, f"{init.relative_to(REPO)}" if done else
                   f"prepare.py get weights {c.backbone} ({c.url}, then surgery)",
                   dataset=run.dataset)


def data_deps(run, model, phases=("train", "eval")):
    return tuple(dict.fromkeys(f"data/{getattr(model, p).dataset}" for p in phases
                               if getattr(model, p).dataset in run.pipeline.data))


def train_steps(run, speeds):
    if run.args.released:
        return
    for m in run.models:
        iters, interval = run.iters(m), run.interval(m)
        n_eval = eval_size(run, m)
        start_from = tuple(f"train/{s}" for s in m.starts_from) or \
            (f"weights/{m.init_from[1]}",)
        deps = data_deps(run, m) + start_from
        if run.final(m).is_file() and m.name not in run.forget:
            yield Task(f"train/{m.name}", deps, True, f"{run.final(m).relative_to(run.out)}",
                       dataset=run.dataset)
            continue
        state = None if m.name in run.forget else snapshots.last_snapshot(run.stage_dir(m), say)
        start = snapshots.snapshot_iter(state) if state else 0
        scorings = iters // interval - start // interval + (iters % interval != 0)
        step_s, image_s = speeds.get(speed_key(run, m), (None, None))
        seconds = None if step_s is None else \
            (iters - start) * step_s * m.iter_size + scorings * n_eval * image_s
        yield Task(f"train/{m.name}", deps, False,
                   (f"resume at iteration {start}, " if start else "") +
                   f"{iters - start} iterations, {scorings} scorings of {n_eval} images"
                   + (f"; {step_s * m.iter_size:.2f} s per iteration, {image_s:.2f} s per "
                      "scored image, timed here" if step_s is not None else ""), seconds,
                   dataset=run.dataset)


def score_steps(run, speeds):
    for m in run.models:
        if run.args.released and m.released_weights is None:
            continue
        path = run.score_path(m)
        current = path.is_file() and score_is_current(path, weights_of(run, m)) and \
            not run.forget & {"score", m.name}
        n = eval_size(run, m)
        image_s = speeds.get(speed_key(run, m), (None, None))[1]
        deps = (f"weights/{m.name}" if run.args.released else f"train/{m.name}",) + \
            data_deps(run, m, ("eval",))
        yield Task(f"score/{m.name}", deps, current,
                   f"{path.relative_to(run.out)}" if current else
                   f"{m.eval.split}, {n} images", None if image_s is None else n * image_s,
                   dataset=run.dataset)


def table_step(run, scores):
    """The dataset's table, from its scores: done when it is newer than all of them."""
    md = run.dir / ("results-released.md" if run.args.released else "results.md")
    paths = [run.score_path(m) for m in run.models]
    done = md.is_file() and all(p.is_file() and p.stat().st_mtime_ns <= md.stat().st_mtime_ns
                                for p in paths) and all(s.done for s in scores)
    return Task(f"table/{run.dataset}", tuple(s.id for s in scores), done,
                f"{md.relative_to(run.out)}" if done else
                f"{md.relative_to(run.out)} and .json from the scores", dataset=run.dataset)


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


def plan(runs, speeds):
    """Every step of the datasets' graph, each once (VGG-16's weights serve several
    datasets), in an order that runs each after the steps it needs."""
    tasks = {}
    for run in runs:
        scores = list(score_steps(run, speeds))
        for t in [*data_steps(run), *weights_steps(run), *train_steps(run, speeds), *scores,
                  table_step(run, scores)]:
            tasks.setdefault(t.id, t)
    return schedule.order(list(tasks.values()))


def label(task_id):
    return task_id.replace("/", " ", 1)


def print_plan(runs, tasks, device, speeds_from, devices=1, mode=""):
    todo = [t for t in tasks if not t.done]
    names = " ".join(r.dataset for r in runs)
    say(f"reproduce {names}{' --released' if runs[0].args.released else ''} "
        f"(on the {str(device)[len('device: '):]}{mode}): {len(tasks)} steps, "
        f"{len(tasks) - len(todo)} done; output in "
        + (str(runs[0].dir) if len(runs) == 1 else str(runs[0].out)))
    for t in tasks:
        eta = f" - about {fmt_time(t.seconds)}" if t.seconds is not None and not t.done else ""
        after = f" (after {', '.join(map(label, t.deps))})" if t.deps and not t.done else ""
        say(f"  [{'done' if t.done else 'todo'}] {label(t.id)}: {t.what}{eta}{after}")
    timed = [t.seconds for t in todo if t.seconds is not None]
    untimed = [t.id for t in todo if t.seconds is None and t.kind != "table"]
    if timed:
        cp_s, cp = schedule.critical_path(tasks)
        say(f"  critical path: {' -> '.join(map(label, cp))}: about {fmt_time(cp_s)}")
        one = schedule.wall_time(tasks, 1)
        more = f", {fmt_time(schedule.wall_time(tasks, devices))} on {devices} devices" \
            if devices > 1 else ""
        say(f"  estimate: {fmt_time(one)} of training and scoring on 1 device{more} "
            f"(no fewer than the critical path on any number)"
            + (f", plus {len(untimed)} steps not timed (downloads, surgery)" if untimed else ""))
        say(f"  timings: {speeds_from}")


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
    """speed.json's timings: {key: {"step_s", "image_s", "machine", "measured"}};
    entries that are not two positive finite seconds are left out (timed again), and
    so are those of the format before the machine was recorded."""
    table = json.loads(text)

    def ok(v):
        return isinstance(v, dict) and all(
            isinstance(v.get(k), (int, float)) and 0 < v[k] < float("inf")
            for k in ("step_s", "image_s")) and isinstance(v.get("machine"), str)
    return {k: v for k, v in table.items() if ok(v)}


def measure_speeds(runs, device, retime=False):
    """({speed key: (s per step, s per image)}, where they were timed) for the models
    still to train or score. Timed here once and kept in OUT/speed.json with the
    machine they were timed on; timed again on another machine, or with --retime."""
    path = runs[0].out / "speed.json"
    table = files.read_cache(path, parse_speeds) or {}
    here = machine_name(device)
    todo = {}
    for run in runs:
        for m in run.models:
            key = speed_key(run, m)
            entry = table.get(key)
            if (retime or entry is None or entry["machine"] != here) and not (
                    run.final(m).is_file() and read_score(run.score_path(m)) is not None):
                todo.setdefault(key, (run, m))
    for key, (run, m) in todo.items():
        say(f"timing {m.name} at {'x'.join(map(str, typical_size(run, m)))} pixels "
            f"({TIMED_ITERS + 1} forward/backward passes) for the estimate")
        step_s, image_s = time_model(m, typical_size(run, m))
        table[key] = {"step_s": step_s, "image_s": image_s, "machine": here,
                      "measured": time.strftime("%Y-%m-%d %H:%M")}
    if todo:
        files.write_cache(path, json.dumps(table, indent=1) + "\n")
    used = {}
    for k, v in table.items():
        if any(k == speed_key(r, m) for r in runs for m in r.models):
            used[v["machine"]] = max(used.get(v["machine"], ""), v["measured"])
    return ({k: (v["step_s"], v["image_s"]) for k, v in table.items()},
            "; ".join(f"{machine}, timed {when}" for machine, when in sorted(used.items()))
            + (" (--retime times them again)" if used else ""))


# ---------------------------------------------------------------------------
# Doing the steps


def do_data(run, d):
    """The dataset checked; downloaded, unpacked and derived first unless it is
    already complete (made by hand, or by an earlier prepare.py get)."""
    counts = not run.test
    if not (run.root / DATASETS[d].dir).is_dir() or preparation.check(d, run.root, out=lambda _: None,
                                                                  counts=counts):
        preparation.get(d, run.root, trust_new=run.args.trust_new_downloads)
    problems = preparation.check(d, run.root, counts=counts)
    if problems:
        for line in problems[:20]:
            say(f"problem: {line}")
        raise UserError(f"{d}: {len(problems)} problem(s) in {run.root / DATASETS[d].dir} "
                            f"(python prepare.py check {d} lists them)")
    found = check_reader(d, run.root)
    sizes = ", ".join(f"{s} {len(found.ids(s))}" for s in DATASETS[d].splits)
    files.write_cache(run.data_stamp(d), sizes + "\n")


def do_weights(run, name):
    weights.get_weights(name, run.args.trust_new_downloads, run.args.data_root)


def do_train(run, model):
    """One training stage, as solve.py trains it (train.run): resumed from its last
    intact snapshot if it has one, else started from its initialisation (a fresh start
    clears the logs of a start that never reached a snapshot)."""
    out = run.stage_dir(model)
    options = train.Options(out=str(out), iters=run.iters(model),
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
    result = train.run(model, options)
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


def redo(runs, stage, dry_run=False):
    """Forget a finished stage (and the stages that start from it) so that it runs
    again: its outputs are removed, unless ``dry_run`` (then the plan only shows it).
    With --released nothing is trained, so a model's stage is its score: only that
    is forgotten, and no weights or snapshots are ever removed."""
    known = {"data", "weights", "score", *(m for r in runs for m in r.pipeline.models)}
    if stage not in known:
        raise UserError(f"--redo {stage}: stages of {', '.join(r.dataset for r in runs)} "
                            f"are data, weights, "
                            f"{', '.join(m for r in runs for m in r.pipeline.models)}, score")
    for run in runs:
        if stage in zoo.MODELS and stage not in run.pipeline.models:
            continue
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
            continue
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


def do_task(run, task):
    """One step, in this process."""
    if task.kind == "data":
        do_data(run, task.name)
    elif task.kind == "weights":
        do_weights(run, task.name)
    elif task.kind == "train":
        do_train(run, zoo.MODELS[task.name])
    elif task.kind == "score":
        do_score(run, zoo.MODELS[task.name])
    else:
        md, lines = write_table(run)
        say("\n".join(lines[4:]))
        say(f"results: {md} and {md.with_suffix('.json')}")


def step_record(out, task_id):
    """What the last --step run of a step recorded (OUT/steps/<step>.json), or None."""
    def parse(text):
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError(text)
        return record
    return files.read_cache(out / "steps" / f"{task_id.replace('/', '-')}.json", parse)


def run_step(runs, task_id):
    """--step KIND/NAME: that step alone (what the local runner and SLURM's jobs run),
    after the steps it needs, under a lock of its own; what became of it is recorded
    in OUT/steps/<step>.json (--status reads it)."""
    tasks = {t.id: t for t in plan(runs, {})}
    if task_id not in tasks:
        raise UserError(f"--step {task_id}: the steps of "
                            f"{', '.join(r.dataset for r in runs)} are {', '.join(tasks)}")
    task = tasks[task_id]
    run = next(r for r in runs if r.dataset == task.dataset)
    if task.done:
        say(f"{label(task_id)}: already done ({task.what})")
        return 0
    missing = [d for d in task.deps if not tasks[d].done]
    if missing:
        raise UserError(f"{label(task_id)} needs {', '.join(map(label, missing))}, not "
                            "done yet")
    folder = run.out / "steps"
    path = folder / f"{task.file_name}.json"
    with files.locked(run.out / "locks" / task.file_name, f"step {task_id}'s lock"):
        def record(state, **more):
            files.write_cache(path, json.dumps({
                "step": task_id, "state": state, "host": socket.gethostname(),
                "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **more}) + "\n")
        record("running")
        say(f"== {label(task_id)}")
        try:
            do_task(run, task)
        except Stopped as e:
            record("stopped", reason="stopped (SIGTERM or Ctrl-C); it resumes from its last "
                   "snapshot when run again")
            return e.args[0]
        except BaseException as e:
            record("failed", reason=(str(e) or type(e).__name__).splitlines()[0][:300])
            raise
        record("done")
    return 0


DEVICE_MODES = ("--gpus", "--workers", "--slurm")


def check_modes(args):
    """The options of the several-device modes, before any work: one line each."""
    chosen = [f for f, v in (("--gpus", args.gpus), ("--workers", args.workers),
                             ("--slurm", args.slurm)) if v]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)}: choose one way to run the steps")
    if chosen and (args.gpu is not None or args.cpu):
        raise UserError(f"{chosen[0]} chooses the devices itself; leave out --gpu/--cpu")
    if args.step and (chosen or args.status or args.cancel):
        raise UserError("--step runs one step here; it takes none of --gpus, --workers, "
                            "--slurm, --status, --cancel")
    for flag in ("partition", "account", "time", "slurm_template", "cpus_per_task"):
        if getattr(args, flag) is not None and not args.slurm:
            raise UserError(f"--{flag.replace('_', '-')} goes with --slurm")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: at least 1")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise UserError(f"--cpus-per-task {args.cpus_per_task}: at least 1")
    gpus = schedule.parse_gpus(args.gpus) if args.gpus else None
    if gpus and not args.dry_run:           # (a plan for GPUs can be made anywhere)
        if not build_info().get("cuda"):
            raise UserError(f"--gpus {args.gpus}: this Caffe is built CPU-only; use "
                                "--workers N on the CPU, or build for CUDA (README: GPU)")
        found = len(visible_gpus())
        bad = [g for g in gpus if g >= found]
        if bad:
            raise UserError(f"--gpus {args.gpus}: {found} GPU(s) answer here (ids "
                                f"0..{found - 1})" if found else f"--gpus {args.gpus}: no GPU "
                                "answers here")
    slurm = None
    if args.slurm or args.status or args.cancel:
        slurm = schedule.Slurm(args.partition, args.account, args.time,
                               Path(args.slurm_template).resolve() if args.slurm_template
                               else None, gpu=bool(build_info().get("cuda")),
                               cpus=args.cpus_per_task or os.cpu_count() or 1)
        if args.slurm:
            slurm.check()
    return gpus, slurm


def main(argv=None):
    p = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n")[0])
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help=f"{', '.join(PIPELINES)}, or all")
    p.add_argument("--released", action="store_true",
                   help="no training: download the released caffemodels and score them")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, its critical path and the estimate only (with "
                        "--slurm: the sbatch lines)")
    p.add_argument("--models", help="only these models (comma-separated) and those they "
                                    "start from")
    p.add_argument("--redo", metavar="STAGE",
                   help="run a finished stage again: data, weights, a model, or score")
    cli.add_data_root_flag(p)
    p.add_argument("--out", help="output folder (default: out/reproduce)")
    p.add_argument("--trust-new-downloads", action="store_true",
                   help="accept downloads with nothing on record (their sha256 is printed)")
    p.add_argument("--retime", action="store_true",
                   help="time the nets for the estimate again, on this machine")
    cli.add_device_flags(p)
    g = p.add_argument_group("several steps at once (docs/reproduce.md)")
    g.add_argument("--gpus", help="run the steps that are ready at once, one per GPU (as 0,1,2,3)")
    g.add_argument("--workers", type=int, help="the same on the CPU: N workers, the cores "
                                               "divided between them")
    g.add_argument("--slurm", action="store_true",
                   help="submit one sbatch job per step, each after the steps it needs")
    g.add_argument("--partition", help="sbatch --partition")
    g.add_argument("--account", help="sbatch --account")
    g.add_argument("--time", help="sbatch --time (each job's limit; a stage stopped by it "
                                  "resumes when submitted again)")
    g.add_argument("--slurm-template", metavar="FILE",
                   help="further #SBATCH lines for every job (modules, constraints, ...)")
    g.add_argument("--cpus-per-task", type=int,
                   help="CPUs per job of a CPU build (default: this machine's cores)")
    g.add_argument("--status", action="store_true",
                   help="each step: done, running, waiting, failed (why), not submitted")
    g.add_argument("--cancel", action="store_true", help="cancel the steps' SLURM jobs")
    p.add_argument("--step", help=argparse.SUPPRESS)          # one step (the runners' jobs)
    # tests only: N iterations per stage, split sizes not enforced, timing at 32x32
    p.add_argument("--test-iters", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.test_iters is not None and args.test_iters < 1:
        raise UserError("--test-iters must be at least 1")
    names = list(PIPELINES) if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    bad = [d for d in names if d not in PIPELINES]
    if bad:
        raise UserError(f"unknown dataset {', '.join(bad)}; datasets: "
                            f"{', '.join(PIPELINES)}, all")
    if args.models is not None:
        want = models_asked(args)
        ours = [m for d in names for m in PIPELINES[d].models]
        if not want or any(m not in ours for m in want):
            raise UserError(f"--models {args.models}: models of {', '.join(names)} are "
                                f"{', '.join(ours)}")
    gpus, slurm = check_modes(args)
    downloads.extra_table()                   # $FCN_CHECKSUMS checked before any work
    here = gpus[0] if gpus and gpus[0] < len(visible_gpus()) else None
    device = use_device(here if gpus else args.gpu, args.cpu or bool(args.workers))
    say(device)
    runs = [Run(args, device, d) for d in names]
    if args.step:
        return run_step(runs, args.step)
    if args.status or args.cancel:
        tasks = plan(runs, {})
        if args.cancel:
            schedule.cancel(runs[0].out / "slurm", say)
            return 0
        say(f"reproduce {' '.join(names)}: {len(tasks)} steps (output in {runs[0].out})")
        schedule.status(tasks, runs[0].out / "slurm", lambda t: step_record(runs[0].out, t), say)
        return 0
    with files.locked(runs[0].out, "--out"):
        files.claim_folder(runs[0].out, "--out", "reproduce.py")
        return reproduce(runs, args, device, gpus, slurm)


def step_command(args, runs):
    """How a runner runs one step alone: reproduce.py DATASET --step ID, with this
    run's options and the device flags of where it runs."""
    def command(task, device_args):
        argv = [sys.executable, str(REPO / "reproduce.py"), task.dataset, "--step", task.id,
                "--out", str(runs[0].out), "--data-root", str(runs[0].root)]
        argv += ["--released"] if args.released else []
        argv += ["--trust-new-downloads"] if args.trust_new_downloads else []
        argv += ["--models", args.models] if args.models else []
        argv += ["--test-iters", str(args.test_iters)] if args.test_iters else []
        return argv + device_args
    return command


def reproduce(runs, args, device, gpus, slurm):
    """Plan, then every step, once the arguments are checked and the output folder held:
    one after another here, several at once (--gpus, --workers), or through SLURM."""
    if args.redo:
        redo(runs, args.redo, args.dry_run)
    speeds, speeds_from = measure_speeds(runs, device, args.retime)
    steps = plan(runs, speeds)
    devices = len(gpus) if gpus else args.workers or 1
    mode = f"; {devices} at once" if devices > 1 else "; through SLURM" if slurm else ""
    print_plan(runs, steps, device, speeds_from, devices, mode)
    command = step_command(args, runs)
    logs = runs[0].out / "logs"
    if slurm:
        flags = ["--gpu", "0"] if slurm.gpu else ["--cpu"]
        ids = schedule.submit(steps, lambda t: command(t, flags), slurm, runs[0].out / "slurm",
                              logs, say, dry_run=args.dry_run)
        if ids:
            say(f"submitted; python reproduce.py {' '.join(args.datasets)} --status follows "
                "them, and the same command again submits only what is not done or queued")
        return 0
    if args.dry_run:
        return 0
    by_name = {r.dataset: r for r in runs}
    t0 = time.time()
    try:
        if devices > 1:
            slots = schedule.slots_for(gpus, args.workers)
            state = schedule.run_local(steps, lambda t, s: command(t, s.args), slots, logs, say)
            failed = [k for k, v in state.items() if v != "done"]
            for run in runs:
                md = run.dir / ("results-released.md" if args.released else "results.md")
                if state.get(f"table/{run.dataset}") == "done":
                    say(f"results: {md} and {md.with_suffix('.json')}")
            return 1 if failed else 0
        for s in steps:
            if s.done and not (s.kind == "weights" and args.released):
                continue                # (released weights: their checksums checked again)
            if s.kind != "table":
                say(f"== {label(s.id)}")
            do_task(by_name[s.dataset], s)
    except Stopped as e:
        say(f"reproduce.py: stopped; run the same command again to continue "
            f"({fmt_time(time.time() - t0)} of work this run)")
        return e.args[0]
    except KeyboardInterrupt:
        print("reproduce.py: interrupted; run the same command again to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="reproduce.py"))

"""Steps that depend on one another (reproduce.py's graph) and the three ways to run
them: one after another, several at once on one machine (one per GPU, or CPU
workers), or as SLURM jobs, one per step, each waiting for the steps it needs
(`sbatch --dependency=afterok:`). Also what the graph tells before any work: the
order, the critical path and the wall time on N devices.

A step runs alone as a command (reproduce.py's --step): the local runner starts
it as a process with its own log, SLURM as a job. Whether a step is done is read
from its outputs, never from the scheduler, so any mix of runs (a local run after
a cluster run, a job killed and submitted again) picks up where the outputs are.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from fcn import files
from fcn.errors import FcnError, UserError
from fcn.progress import fmt_time


@dataclass
class Task:
    """One step: ``id`` is KIND/NAME (train/voc-fcn32s); ``deps`` the ids it needs."""
    id: str
    deps: Tuple[str, ...]
    done: bool
    what: str                           # one line: what it does or found
    seconds: Optional[float] = None     # the estimate, where timed
    dataset: str = ""                   # the reproduce.py dataset that runs it

    @property
    def kind(self):
        return self.id.split("/", 1)[0]

    @property
    def name(self):
        return self.id.split("/", 1)[1]

    @property
    def file_name(self):
        """The step as a file name (logs, job scripts): train-voc-fcn32s."""
        return self.id.replace("/", "-")


def order(tasks):
    """The tasks in an order that runs every step after the steps it needs (stable:
    the given order where the graph allows). A dependency that is not a task, or a
    circle, is a fault of the graph's maker."""
    by_id = {t.id: t for t in tasks}
    for t in tasks:
        missing = [d for d in t.deps if d not in by_id]
        if missing:
            raise FcnError(f"step {t.id} needs {', '.join(missing)}, which is no step")
    state, out = {}, []

    def visit(t):
        if state.get(t.id) == "placed":
            return
        if state.get(t.id) == "visiting":
            raise FcnError(f"the steps depend on each other in a circle through {t.id}")
        state[t.id] = "visiting"
        for d in t.deps:
            visit(by_id[d])
        state[t.id] = "placed"
        out.append(t)
    for t in tasks:
        visit(t)
    return out


def dependents(tasks, failed):
    """Every task that needs ``failed`` (directly or through others)."""
    out, grew = set(), True
    while grew:
        grew = False
        for t in tasks:
            if t.id not in out and any(d == failed or d in out for d in t.deps):
                out.add(t.id)
                grew = True
    return out


def _cost(t):
    return 0.0 if t.done else (t.seconds or 0.0)


def critical_path(tasks):
    """(seconds, [task ids]) of the longest chain of steps still to do, by their
    estimates (steps not timed count 0)."""
    best = {}

    def longest(b):                  # (steps not timed, as tables, end the chain)
        return b[0], len(b[1])
    for t in order(tasks):
        prev = max((best[d] for d in t.deps), key=longest, default=(0.0, []))
        best[t.id] = (prev[0] + _cost(t), prev[1] + ([t.id] if not t.done else []))
    return max(best.values(), key=longest, default=(0.0, []))


def wall_time(tasks, n):
    """Seconds to do what is left on ``n`` devices, one step per device at a time, the
    ready step with the longest chain after it first (list scheduling)."""
    todo = {t.id: t for t in tasks if not t.done}
    tail = {}
    for t in reversed(order(tasks)):
        after = [tail[u.id] for u in tasks if t.id in u.deps]
        tail[t.id] = _cost(t) + max(after, default=0.0)
    finish, running, clock = {}, [], 0.0
    done = {t.id for t in tasks if t.done}
    while todo or running:
        ready = sorted((t for t in todo.values() if all(d in done for d in t.deps)),
                       key=lambda t: -tail[t.id])
        while ready and len(running) < n:
            t = ready.pop(0)
            del todo[t.id]
            running.append((clock + _cost(t), t.id))
        if not running:
            break                                     # (a graph with a circle)
        running.sort()
        clock, tid = running.pop(0)
        done.add(tid)
        finish[tid] = clock
    return clock


# ---------------------------------------------------------------------------
# Several steps at once on this machine


@dataclass
class Slot:
    """Where one step at a time runs: the device flags of its command and its
    environment (CPU workers share the cores out)."""
    name: str
    args: List[str]
    env: Dict[str, str] = field(default_factory=dict)


def slots_for(gpus=None, workers=None, cores=None):
    """One slot per GPU of --gpus, or --workers CPU slots with the cores divided."""
    if gpus:
        return [Slot(f"GPU {g}", ["--gpu", str(g)]) for g in gpus]
    cores = cores or os.cpu_count() or 1
    each = max(cores // workers, 1)
    return [Slot(f"CPU worker {i + 1}", ["--cpu"], {"OMP_NUM_THREADS": str(each),
                                                    "OPENBLAS_NUM_THREADS": str(each)})
            for i in range(workers)]


def parse_gpus(text):
    """--gpus 0,1,2,3 -> [0, 1, 2, 3]; one line for anything else."""
    items = [s.strip() for s in str(text).split(",")]
    if not items or not all(re.fullmatch(r"\d+", s) for s in items) or \
            len(set(items)) != len(items):
        raise UserError(f"--gpus {text}: give GPU ids, comma-separated and each once "
                        "(as 0,1,2,3)")
    return [int(s) for s in items]


def run_local(tasks, command, slots, logs, say, poll=0.5):
    """Run the steps not done, as many at once as there are slots, each when the
    steps it needs are done. ``command(task, slot)`` is its argv; its output goes to
    ``logs``/<step>.log. One line per step as it starts and ends; a failed step stops
    only the steps that need it. Returns {id: "done" | "failed: why" | "not run: why"}.
    Ctrl-C or SIGTERM stop every running step the way they stop one (a training stage
    snapshots first) and raise KeyboardInterrupt."""
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    state = {t.id: "done" for t in tasks if t.done}
    todo = [t for t in order(tasks) if not t.done]
    free, running, t0 = list(slots), {}, time.time()
    total, ended = len(todo), 0

    def finished(t, rc, slot, log, started):
        nonlocal ended
        ended += 1
        took = fmt_time(time.time() - started)
        if rc == 0:
            state[t.id] = "done"
            say(f"[{ended}/{total}] {t.id}: done in {took} ({slot.name}; log {log})")
            return
        why = f"exit {rc}" if rc > 0 else f"killed by {signal.Signals(-rc).name}"
        line = last_line(log)
        state[t.id] = f"failed: {why}" + (f": {line}" if line else "")
        say(f"[{ended}/{total}] {t.id}: FAILED ({why}{': ' + line if line else ''}; "
            f"log {log})")
        for d in dependents(tasks, t.id):
            if d not in state:
                state[d] = f"not run: it needs {t.id}, which failed"
                ended += 1
                say(f"[{ended}/{total}] {d}: not run (it needs {t.id}, which failed)")

    try:
        while todo or running:
            ready = [t for t in todo if t.id not in state
                     and all(state.get(d) == "done" for d in t.deps)]
            while ready and free:
                t, slot = ready.pop(0), free.pop(0)
                todo.remove(t)
                log = logs / f"{t.file_name}.log"
                with open(log, "a") as f:
                    f.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {t.id} on {slot.name}\n")
                    f.flush()
                    p = subprocess.Popen(command(t, slot), stdout=f, stderr=subprocess.STDOUT,
                                         env={**os.environ, **slot.env,
                                              "PYTHONUNBUFFERED": "1"},
                                         start_new_session=True)
                running[p.pid] = (p, t, slot, log, time.time())
                say(f"{t.id}: started ({slot.name}; log {log})")
            todo = [t for t in todo if t.id not in state]
            if not running:
                break
            time.sleep(poll)
            for pid, (p, t, slot, log, started) in list(running.items()):
                rc = p.poll()
                if rc is not None:
                    del running[pid]
                    free.append(slot)
                    finished(t, rc, slot, log, started)
    except KeyboardInterrupt:
        for p, t, *_ in running.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p, t, *_ in running.values():
            p.wait()
        raise
    for t in todo:
        state.setdefault(t.id, "not run")
    say(f"{sum(1 for t in tasks if state.get(t.id) == 'done')} of {len(tasks)} steps done "
        f"in {fmt_time(time.time() - t0)}")
    return state


def last_line(log):
    """The line of a step's log that says why it failed: its last non-empty line."""
    try:
        lines = [l.strip() for l in Path(log).read_text(errors="replace").splitlines()
                 if l.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# ---------------------------------------------------------------------------
# SLURM: one job per step, afterok dependencies


TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
JOB_STATES_ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED",
                     "REQUEUED", "RESIZING")


@dataclass
class Slurm:
    """How jobs are asked for: the options passed through to sbatch, a template of
    further #SBATCH lines, a GPU per job (--gres=gpu:1) or CPUs."""
    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = None
    template: Optional[Path] = None
    gpu: bool = False
    cpus: int = 1
    extra: List[str] = field(default_factory=list)

    def check(self):
        """Every option before anything is submitted; one line each."""
        if not shutil.which("sbatch"):
            raise UserError("--slurm: no sbatch on PATH; run it on a machine of the SLURM "
                            "cluster (a login node), or without --slurm")
        for flag, v in (("--partition", self.partition), ("--account", self.account)):
            if v is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", v):
                raise UserError(f"{flag} {v!r}: a SLURM name is letters, digits, . _ , -")
        if self.time is not None and not TIME_RE.match(self.time):
            raise UserError(f"--time {self.time!r}: SLURM's forms are MINUTES, HH:MM:SS or "
                            "DAYS-HH[:MM[:SS]]")
        if self.template is not None:
            try:
                text = Path(self.template).read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"--slurm-template {self.template}: cannot be read "
                                f"({getattr(e, 'strerror', None) or e})") from None
            bad = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
            if bad:
                raise UserError(f"--slurm-template {self.template}: holds {bad[0]!r}; it may "
                                "hold only #SBATCH lines and comments (the command is ours)")

    def options(self):
        out = []
        for flag, v in (("--partition", self.partition), ("--account", self.account),
                        ("--time", self.time)):
            if v is not None:
                out.append(f"{flag}={v}")
        out.append("--gres=gpu:1" if self.gpu else f"--cpus-per-task={self.cpus}")
        return out + list(self.extra)

    def script(self, task, argv, log):
        """The job script of one step: the template's lines, then the command."""
        head = Path(self.template).read_text().rstrip("\n") + "\n" if self.template else ""
        return ("#!/bin/bash\n" + head
                + f"#SBATCH --job-name=fcn-{task.file_name}\n"
                + f"#SBATCH --output={log}\n"
                + "".join(f"#SBATCH {o}\n" for o in self.options())
                + "set -e\n" + f"exec {' '.join(shlex.quote(a) for a in argv)}\n")


def sbatch(args, what):
    """Run sbatch; its job id, or UserError with its own words."""
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        words = " ".join((r.stderr or r.stdout).split())[:300]
        raise UserError(f"sbatch refused {what}: {words or f'exit {r.returncode}'}")
    return r.stdout.strip().split(";")[0]


def queue(job_ids):
    """{job id: (state, reason)} of those of the jobs SLURM still lists as queued or
    running (squeue of this user's jobs: a job id SLURM has forgotten is no error)."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    r = subprocess.run(["squeue", "-h", "--me", "-o", "%i|%T|%r"], capture_output=True,
                       text=True, timeout=120)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in job_ids and parts[1] in JOB_STATES_ACTIVE:
            out[parts[0]] = (parts[1], parts[2])
    return out


class Jobs:
    """The job of each step as submitted (OUT/slurm/jobs.json), so a second run
    submits only what is neither done nor queued, and --status and --cancel find
    them."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / "jobs.json"
        self.table = files.read_cache(self.path, self._parse) or {}

    @staticmethod
    def _parse(text):
        table = json.loads(text)
        if not isinstance(table, dict) or not all(isinstance(v, dict) and "job" in v
                                                  for v in table.values()):
            raise ValueError(text)
        return table

    def save(self):
        files.write_cache(self.path, json.dumps(self.table, indent=1) + "\n")


def submit(tasks, command, slurm, folder, logs, say, dry_run=False):
    """One job per step not done, in order, each after the jobs of the steps it needs
    (afterok); steps whose job is still queued are kept, not submitted again. Every
    script is checked by `sbatch --test-only` before the first is submitted, so a
    refusal submits nothing. Returns {id: job id}."""
    jobs = Jobs(folder)
    active = queue([v["job"] for v in jobs.table.values()]) if not dry_run else {}
    todo = [t for t in order(tasks) if not t.done]
    if not todo:
        say("every step is done: nothing to submit")
        return {}
    keep = {t.id: jobs.table[t.id]["job"] for t in todo if t.id in jobs.table
            and active.get(jobs.table[t.id]["job"], ("",))[0] in JOB_STATES_ACTIVE}
    scripts, folder = {}, Path(folder)
    for t in todo:
        if t.id in keep:
            continue
        log = Path(logs) / f"{t.file_name}.log"
        scripts[t.id] = (folder / f"{t.file_name}.sh", slurm.script(t, command(t), log), log)
    if dry_run:
        for t in todo:
            after = [f"${d.replace('/', '_').replace('-', '_')}" for d in t.deps
                     if d in scripts or d in keep]
            dep = f" --dependency=afterok:{':'.join(after)} --kill-on-invalid-dep=yes" \
                if after else ""
            var = t.id.replace("/", "_").replace("-", "_")
            say(f"{var}=$(sbatch --parsable{dep} {scripts[t.id][0]})" if t.id in scripts
                else f"{var}={keep[t.id]}   # {t.id}: job {keep[t.id]} already queued")
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    Path(logs).mkdir(parents=True, exist_ok=True)
    for tid, (path, text, _) in scripts.items():
        files.write_atomic(path, lambda tmp, text=text: tmp.write_text(text))
        sbatch(["--test-only", str(path)], f"the job of {tid} ({path})")
    ids = dict(keep)
    for t in todo:
        if t.id in keep:
            say(f"{t.id}: job {keep[t.id]} already queued")
            continue
        path, _, log = scripts[t.id]
        after = [ids[d] for d in t.deps if d in ids]
        dep = [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"] \
            if after else []
        ids[t.id] = sbatch([*dep, str(path)], f"the job of {t.id}")
        jobs.table[t.id] = {"job": ids[t.id], "log": str(log),
                            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
        jobs.save()
        say(f"{t.id}: job {ids[t.id]}" + (f" after {', '.join(after)}" if after else "")
            + f" (log {log})")
    return ids


def status(tasks, folder, step_state: Callable[[str], Optional[dict]], say):
    """Each step: done (its outputs), running or waiting (the queue), failed or stopped
    (its own record), not run (a step it needs failed), or to do. Returns the counts."""
    jobs = Jobs(folder)
    active = queue([v["job"] for v in jobs.table.values()])
    counts, failed = {}, set()
    for t in order(tasks):
        job = jobs.table.get(t.id, {}).get("job")
        rec = step_state(t.id) or {}
        log = jobs.table.get(t.id, {}).get("log")
        if t.done:
            what = "done"
        elif job in active:
            state, reason = active[job]
            what = f"{'running' if state == 'RUNNING' else 'waiting'} (job {job}, {state}" + \
                (f", {reason}" if reason and reason != "None" else "") + ")"
        elif any(d in failed for d in t.deps):
            what = f"not run (it needs {', '.join(d for d in t.deps if d in failed)}, which " \
                   "failed)"
            failed.add(t.id)
        elif rec.get("state") == "stopped":
            what = f"stopped ({rec.get('reason')}; log {log})"
        elif rec.get("state") in ("failed", "running") or job:
            why = rec.get("reason") if rec.get("state") == "failed" else \
                "its job ended without finishing it (cancelled, or killed)"
            what = f"failed (job {job}: {why}; log {log})" if job else f"failed ({why})"
            failed.add(t.id)
        else:
            what = "not submitted" if jobs.table else "to do"
        key = what.split(" (", 1)[0]
        counts[key] = counts.get(key, 0) + 1
        say(f"  {t.id}: {what}")
    say("  " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return counts


def cancel(folder, say):
    """scancel every job of the table that SLURM still lists."""
    jobs = Jobs(folder)
    active = queue([v["job"] for v in jobs.table.values()])
    if not active:
        say("no job of these steps is queued or running")
        return []
    subprocess.run(["scancel", *active], capture_output=True, text=True, timeout=120)
    say(f"cancelled {len(active)} job(s): {', '.join(sorted(active, key=int))}")
    return sorted(active)

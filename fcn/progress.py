"""What a long command says as it goes: one progress line for every long loop
(downloads in MB, deriving and checking files and images, training iterations),
redrawn in place on a terminal and printed as separate lines otherwise (every 10%
for counted work); and say(), the one way a command prints a line at once."""
import sys
import time


def say(msg="", stream=None):
    """Print one line now (flushed: progress next to a subprocess's output, or a log)."""
    print(msg, file=stream or sys.stdout, flush=True)


def fmt_time(s):
    """12m05s, 3h07m, 23d01h (days from two days on: training estimates run to weeks)."""
    s = int(s)
    if s >= 2 * 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """``total`` units of work from ``start``; ``update(n)`` counts and shows a line
    when worth it, ``show(text)`` prints any line. ``unit`` "MB" counts bytes."""

    def __init__(self, total, start=0, label="", unit="", stream=None):
        self.total, self.start, self.done = total, start, start
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0, self.shown, self.last = time.time(), -1, 0.0

    @property
    def rate(self):
        """Units per second since the start."""
        return (self.done - self.start) / max(time.time() - self.t0, 1e-9)

    @property
    def eta(self):
        """Seconds left at the rate so far (inf before any progress)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else float("inf")

    def show(self, text):
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n",
              file=self.stream, flush=True)

    def close(self):
        if self.tty:
            print(file=self.stream, flush=True)

    def fmt(self, n):
        return f"{n / 1e6:.1f}" if self.unit == "MB" else f"{n:.0f}"

    def update(self, n):
        """Count ``n`` more; show "label: pct done/total unit, rate unit/s" on every
        new percent on a terminal (at most 5 a second), every 10% otherwise."""
        self.done += n
        now = time.time()
        if self.total:
            pct = int(100 * self.done / self.total)
            step = pct if self.tty else pct // 10 * 10
            if step == self.shown or (self.tty and now - self.last < 0.2 and pct < 100):
                return
            self.shown, self.last = step, now
        elif now - self.last < 1.0:
            return
        else:
            self.last = now
        of = f"/{self.fmt(self.total)}" if self.total else ""
        pct_s = f"{100 * self.done / self.total:5.1f}% " if self.total else ""
        self.show(f"{self.label}: {pct_s}{self.fmt(self.done)}{of} {self.unit}, "
                  f"{self.fmt(self.rate)} {self.unit}/s")

"""What runs and sweeps tell their user: one :class:`Reporter`, handed down from the command line.

The engine, the executors and the sweeps never print: they call the reporter they were given.
The base class says nothing but sends warnings to the standard ``logging`` logger ``harness``
(library use, tests). :class:`ConsoleReporter` is the command line's: a tqdm bar over training
steps (one plain line per epoch off a terminal), the reference's ``TRAIN_METRICS`` lines, so that
scripts written for the reference keep working, and a line per run of a sweep. ``--quiet`` keeps
results and warnings only; ``--verbose`` adds detail.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine's and the store's types; this module imports none of the harness
    from harness.engine.train import EpochMetrics

log = logging.getLogger("harness")

QUIET, NORMAL, VERBOSE = 0, 1, 2


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``: a count and its noun (``words``: an irregular plural)."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "nan"


def epoch_line(e: "EpochMetrics", epochs: int, best: float, note: str = "") -> str:
    """One epoch, as a log shows it (trusted and sandboxed runs alike)."""
    return (f"epoch {e.epoch:>3}/{epochs}  lr {_number(e.lr, '.5f')}  train loss "
            f"{_number(e.train_loss, '.4f')} acc {_number(e.train_acc, '6.2f')}{note}  test loss "
            f"{_number(e.test_loss, '.4f')} acc {_number(e.test_acc, '6.2f')}  best {best:6.2f}  "
            f"({(e.train_s or 0) + (e.eval_s or 0):.1f}s)")


def metrics_line(e: "EpochMetrics") -> str:
    """The reference's log line, kept so that scripts written for it keep working."""
    return (f"TRAIN_METRICS: epoch={e.epoch} train_loss={_number(e.train_loss, '.4f')} "
            f"train_acc={_number(e.train_acc, '.2f')} test_loss={_number(e.test_loss, '.4f')} "
            f"test_acc={_number(e.test_acc, '.2f')} lr={_number(e.lr, '.6f')}")


class Heartbeat:
    """In a log (no terminal, so no progress bar), a line every ``every_s`` seconds of training:
    where the epoch is, images/s, and when it will end; a 200-epoch run is never silent for long."""

    def __init__(self, steps_per_epoch: int = 0, batch_size: int = 0, epochs: int = 0,
                 every_s: float = 60.0, clock=time.monotonic):
        self.steps, self.batch, self.epochs, self.every_s, self.clock = (
            steps_per_epoch, batch_size, epochs, every_s, clock)
        self.epoch_no, self.done, self.started = 1, 0, clock()
        self.last = self.started

    def epoch_done(self) -> None:
        self.epoch_no, self.done, self.started = self.epoch_no + 1, 0, self.clock()

    def step(self) -> str | None:
        self.done += 1
        now = self.clock()
        if now - self.last < self.every_s or not self.steps:
            return None
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.steps - self.done) / rate if rate > 0 else float("nan")
        return (f"  epoch {self.epoch_no}/{self.epochs}: step {self.done}/{self.steps}, "
                f"{rate * self.batch:.0f} images/s, epoch ends in {eta:.0f}s")


def duration(seconds: float) -> str:
    """``45s``, ``12m 05s``, ``3h 20m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class SweepClock:
    """A sweep's progress: each run's time, runs done of those to run, and an ETA from the
    measured pace (wall time since the first start over runs done, so runs side by side count)."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.started, self.first = clock, {}, None
        self.totals: dict[str, int] = {}  # each entry's planned runs (a sweep may hold several)
        self.skipped, self.done = 0, 0

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def planned(self, run: Any, total: int, state: str) -> None:
        self.totals[getattr(run, "label", "")] = total
        if state in ("done", "running"):
            self.skipped += 1
        elif state == "started":
            now = self.clock()
            self.first = now if self.first is None else self.first
            self.started[id(run)] = now

    def finished(self, run: Any) -> str:
        began = self.started.pop(id(run), None)
        if began is None or self.first is None:
            return ""
        self.done += 1
        now = self.clock()
        to_run = max(self.total - self.skipped, self.done)
        left = to_run - self.done
        eta = (now - self.first) / self.done * left
        return (f" ({duration(now - began)}; {self.done}/{to_run} done"
                + (f", about {duration(eta)} left)" if left else ")"))


class Reporter:
    """Events of a run and of a sweep. Every method may be overridden; none must be."""

    # -- one run ---------------------------------------------------------------------------
    def run_started(self, record: dict[str, Any]) -> None:
        """A run's record as it starts (config, data, environment; no epochs yet)."""

    def step(self) -> None:
        """One training step done."""

    def epoch(self, metrics: "EpochMetrics") -> None:
        """One epoch done (test numbers None where this process cannot score)."""

    def run_ended(self) -> None:
        """The run stopped, one way or another (release what run_started took)."""

    def warn(self, message: str) -> None:
        log.warning(message)

    # -- a sweep ---------------------------------------------------------------------------
    def planned(self, run: Any, index: int, total: int, state: str) -> None:
        """``run`` (a harness.store.plan.PlannedRun, named by its ``label``) is ``started``,
        ``queued`` (in a cluster array), ``done`` (skipped: the store has it) or ``running``
        (skipped: a worker elsewhere holds it)."""

    def finished(self, run: Any, record: dict[str, Any]) -> None:
        """A planned run ended with ``record``."""

    def worker_line(self, line: str) -> None:
        """A line of a worker's log (shown when one run goes at a time)."""


class ConsoleReporter(Reporter):
    """The command line's reporter; ``level`` is QUIET, NORMAL or VERBOSE."""

    def __init__(self, level: int = NORMAL, echo=None):
        import click

        self.level = level
        self.echo = echo or click.echo
        self.bar = None
        self.epochs = 0
        self.best = float("-inf")
        self.plain = True
        self.beat = Heartbeat()
        self.sweep = SweepClock()

    def info(self, message: str, err: bool = False) -> None:
        if self.level >= NORMAL:
            self.echo(message, err=err)

    def detail(self, message: str) -> None:
        if self.level >= VERBOSE:
            self.echo(message, err=True)

    def warn(self, message: str) -> None:
        self.echo(f"warning: {message}", err=True)

    def run_started(self, record: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        cfg = record["config"]
        self.epochs, self.best = cfg["epochs"], float("-inf")
        steps = -(-record["data"]["train_size"] // cfg["batch_size"])
        bar = tqdm(total=self.epochs * steps, unit="step", dynamic_ncols=True,
                   disable=None if self.level >= NORMAL else True, leave=False, file=sys.stderr)
        self.bar, self.plain = bar, bool(bar.disable)
        self.beat = Heartbeat(steps, cfg["batch_size"], self.epochs)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if self.plain and self.level >= NORMAL:
            line = self.beat.step()
            if line:
                self.echo(line)

    def epoch(self, e: "EpochMetrics") -> None:
        self.beat.epoch_done()
        if e.test_acc is None:  # a sandboxed trainer: the parent prints the scored line
            return
        self.best = max(self.best, e.test_acc)
        if self.plain:
            self.info(epoch_line(e, self.epochs, self.best))
        elif self.bar is not None:
            self.bar.set_postfix(epoch=e.epoch, test_acc=f"{e.test_acc:.2f}", best=f"{self.best:.2f}")
        if e.epoch == 1 or e.epoch % 10 == 0:
            if self.plain or self.bar is None:
                self.echo(metrics_line(e))
            else:
                self.bar.write(metrics_line(e))

    def run_ended(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def planned(self, run: Any, index: int, total: int, state: str) -> None:
        where = f"[{index}/{total}] {run.label}: {run.setting.key}" \
                + (" (hidden)" if run.setting.hidden else "") + f", seed {run.seed}"
        self.sweep.planned(run, total, state)
        if state == "started":
            self.info(f"{where}: started")
        elif state == "queued":
            self.info(f"{where}: in the array")
        else:
            why = "already done" if state == "done" else "running elsewhere (harness status)"
            self.info(f"{where}: {why}, skipped")

    def finished(self, run: Any, record: dict[str, Any]) -> None:
        best, failure = record.get("best_acc"), record.get("failure")
        line = (f"  {run.label}: {run.setting.key}, seed {run.seed}: {record['status']}"
                + (f", best {best:.2f}%" if best is not None else "")
                + (f" [{failure['category']}] {failure['message']}" if failure else "")
                + self.sweep.finished(run))
        if record["status"] == "failed":
            self.echo(line, err=True)
        else:
            self.info(line)

    def worker_line(self, line: str) -> None:
        self.info(f"    {line}")

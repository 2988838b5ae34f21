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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine's and the store's types; this module imports none of the harness
    from harness.engine.train import EpochMetrics

log = logging.getLogger("harness")

QUIET, NORMAL, VERBOSE = 0, 1, 2


def metrics_line(e: "EpochMetrics") -> str:
    """The reference's log line, kept so that scripts written for it keep working."""
    return (f"TRAIN_METRICS: epoch={e.epoch} train_loss={e.train_loss:.4f} train_acc={e.train_acc:.2f} "
            f"test_loss={e.test_loss:.4f} test_acc={e.test_acc:.2f} lr={e.lr:.6f}")


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
        """``run`` (a harness.store.status.PlannedRun, named by its ``label``) is ``started``,
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
        self.bar = tqdm(total=self.epochs * steps, unit="step", dynamic_ncols=True,
                        disable=None if self.level >= NORMAL else True, leave=False,
                        file=sys.stderr)
        self.plain = bool(self.bar.disable)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch(self, e: "EpochMetrics") -> None:
        if e.test_acc is None:  # a sandboxed trainer: the parent prints the scored line
            return
        self.best = max(self.best, e.test_acc)
        if self.plain:
            self.info(f"epoch {e.epoch:>3}/{self.epochs}  lr {e.lr:.5f}  "
                      f"train loss {e.train_loss:.4f} acc {e.train_acc:6.2f}  "
                      f"test loss {e.test_loss:.4f} acc {e.test_acc:6.2f}  best {self.best:6.2f}  "
                      f"({e.train_s + e.eval_s:.1f}s)")
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
                + (f" [{failure['category']}] {failure['message']}" if failure else ""))
        if record["status"] == "failed":
            self.echo(line, err=True)
        else:
            self.info(line)

    def worker_line(self, line: str) -> None:
        self.info(f"    {line}")

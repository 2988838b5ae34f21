"""What a run prints while it trains: a tqdm bar (one line per epoch off a terminal), and the
reference's ``TRAIN_METRICS`` lines, so that scripts written for the reference keep working."""

from __future__ import annotations

import sys

import click

from harness.engine.train import EpochMetrics


def metrics_line(e: EpochMetrics) -> str:
    """The reference's log line, kept so that scripts written for it keep working."""
    return (f"TRAIN_METRICS: epoch={e.epoch} train_loss={e.train_loss:.4f} train_acc={e.train_acc:.2f} "
            f"test_loss={e.test_loss:.4f} test_acc={e.test_acc:.2f} lr={e.lr:.6f}")


class Progress:
    """A tqdm bar over training steps with an ETA; one plain line per epoch when not on a terminal."""

    def __init__(self, epochs: int, steps_per_epoch: int):
        from tqdm.auto import tqdm

        self.epochs = epochs
        self.best = float("-inf")
        self.bar = tqdm(total=epochs * steps_per_epoch, unit="step", dynamic_ncols=True,
                        disable=None, leave=False, file=sys.stderr)

    def step(self) -> None:
        self.bar.update(1)

    def epoch(self, e: EpochMetrics) -> None:
        self.best = max(self.best, e.test_acc)
        if self.bar.disable:
            click.echo(f"epoch {e.epoch:>3}/{self.epochs}  lr {e.lr:.5f}  "
                       f"train loss {e.train_loss:.4f} acc {e.train_acc:6.2f}  "
                       f"test loss {e.test_loss:.4f} acc {e.test_acc:6.2f}  best {self.best:6.2f}  "
                       f"({e.train_s + e.eval_s:.1f}s)")
        else:
            self.bar.set_postfix(epoch=e.epoch, test_acc=f"{e.test_acc:.2f}", best=f"{self.best:.2f}")
        if e.epoch == 1 or e.epoch % 10 == 0:
            (click.echo if self.bar.disable else self.bar.write)(metrics_line(e))

    def close(self) -> None:
        self.bar.close()

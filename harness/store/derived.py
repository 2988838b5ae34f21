"""What a record derives from its scored epochs: the score (best and final accuracy), the flags,
the batch check, and how the run trained (convergence speed, stability, generalisation gap).

The curve metrics:

Every function takes the per-epoch lists of a record (epoch 1 first) and states its definition;
the values are what a study report and the leaderboard's entry pages show. Non-finite values (a
diverged epoch) never count as reached accuracy or as a loss rise.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from harness.protocol.verdict import batch_dependence, best_index, check_images

REACH_FRACTIONS = (0.90, 0.95, 0.99)
LOSS_RISE = 0.05  # a test-loss rise counts when loss[e] > (1 + LOSS_RISE) * loss[e - 1]
# What each flag means, in the words the console and the site show (legend, tooltips).
FLAGS: dict[str, str] = {
    "diverged": "a run's loss became non-finite or exploded; the cell counts its best accuracy before "
                "that, so the number flatters the layer",
    "chance": "a run ended within 3 binomial standard errors of chance accuracy: it learnt nothing "
              "the test set can show",
    "failed": "a run failed (an error, a time or memory limit, a malformed hand-over from its "
              "sandbox) and is not counted",
    "incomplete": "fewer completed seeds than the suite asks for",
    "few-seeds": "fewer than 3 completed seeds: the interval is too wide to rank by",
    "batch-dependent": "the score depends on how the test set is batched: the layer uses the test "
                       "batch's own statistics at evaluation, and re-scoring test images in other "
                       "batches changes its predictions (the batch check). The reference protocol "
                       "allows this (batches of 128, in order), so the board does too, but the "
                       "number is not a property of the layer alone",
    "bf16": "trained with bf16 autocast, not the protocol's fp32 (never mixed with fp32 runs)",
}
LATE_FRACTION = 0.10  # "late" epochs: the last 10% (at least 2)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def epochs_to_reach(test_acc: Sequence[float | None],
                    fractions: Sequence[float] = REACH_FRACTIONS) -> dict[str, int | None]:
    """For each fraction f, the first epoch (1-based) whose test accuracy is at least f x the best
    test accuracy of the run; None when the run has no finite accuracy."""
    finite = _finite(test_acc)
    best = max(finite) if finite else None
    out: dict[str, int | None] = {}
    for f in fractions:
        key = f"{round(f * 100)}%"
        out[key] = None if best is None else next(
            i for i, a in enumerate(test_acc, 1)
            if a is not None and math.isfinite(a) and a >= f * best)
    return out


def loss_rises(test_loss: Sequence[float | None], threshold: float = LOSS_RISE) -> int:
    """Number of epochs whose test loss is more than ``threshold`` (relative) above the previous
    epoch's; pairs with a non-finite value do not count."""
    count = 0
    for prev, cur in zip(test_loss, test_loss[1:]):
        if (prev is not None and cur is not None and math.isfinite(prev) and math.isfinite(cur)
                and cur > (1.0 + threshold) * prev):
            count += 1
    return count


def late_std(test_acc: Sequence[float | None], fraction: float = LATE_FRACTION) -> float | None:
    """Sample standard deviation (ddof=1) of the test accuracy over the last ``fraction`` of the
    epochs, at least 2 of them; None with fewer than 2 finite values there."""
    n = max(2, math.ceil(fraction * len(test_acc)))
    tail = _finite(test_acc[-n:])
    if len(tail) < 2:
        return None
    mean = sum(tail) / len(tail)
    return math.sqrt(sum((v - mean) ** 2 for v in tail) / (len(tail) - 1))


def generalisation_gap(train_acc: Sequence[float | None],
                       test_acc: Sequence[float | None]) -> float | None:
    """Final epoch's training accuracy minus its test accuracy (percentage points)."""
    if not train_acc or not test_acc:
        return None
    a, b = train_acc[-1], test_acc[-1]
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a - b


def curve_metrics(epochs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All of the above from a record's ``epochs`` list, with the thresholds they used."""
    test_acc = [e.get("test_acc") for e in epochs]
    return {
        "epochs_to_reach": epochs_to_reach(test_acc),
        "loss_rises": loss_rises([e.get("test_loss") for e in epochs]),
        "loss_rise_threshold": LOSS_RISE,
        "late_test_acc_std": late_std(test_acc),
        "late_fraction": LATE_FRACTION,
        "generalisation_gap": generalisation_gap([e.get("train_acc") for e in epochs], test_acc),
    }


def at_chance(acc: float | None, chance: float, n_test: int) -> bool:
    """True when a test accuracy is within 3 binomial standard errors of chance (or below it):
    the model has learnt nothing that the test set can show."""
    if acc is None or n_test <= 0:
        return False
    p = chance / 100.0
    return acc <= 100.0 * (p + 3.0 * math.sqrt(p * (1.0 - p) / n_test))


def run_flags(record: dict[str, Any]) -> list[str]:
    """What a reader of the run's numbers must know: ``diverged`` (its best accuracy is the best
    before it diverged), ``chance`` (it ended at chance accuracy) and ``batch-dependent`` (its
    test accuracy depends on how the test set was batched: harness.protocol.scoring)."""
    flags = []
    if record["status"] == "diverged":
        flags.append("diverged")
    chance = record.get("chance_acc") or 100.0 / record["config"]["num_classes"]
    if record.get("final_acc") is not None and at_chance(
            record["final_acc"], chance, record["data"]["test_size"]):
        flags.append("chance")
    if (record.get("evaluation") or {}).get("batch_dependent"):
        flags.append("batch-dependent")
    return flags


def finish_record(record: dict[str, Any], epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything a record derives from its scored epochs: the score (best and final accuracy),
    the curve metrics, the batch check and the flags. ``record`` has its config, data and status."""
    i = best_index([e["test_acc"] for e in epochs])
    best = epochs[i] if i is not None else None
    record.update({
        "epochs": epochs, "epochs_completed": len(epochs),
        "best_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_acc": epochs[-1]["test_acc"] if epochs else None,
        "chance_acc": 100.0 / record["config"]["num_classes"],
        "dynamics": curve_metrics(epochs),
        "evaluation": batch_dependence([e.get("check_change") for e in epochs],
                                       [e.get("check_flips") for e in epochs],
                                       record["config"]["precision"],
                                       check_images(record["data"]["test_size"])),
    })
    if best is None and record["status"] == "diverged" and record.get("failure"):
        # The reference script keeps training a diverged model and evaluates it every epoch:
        # non-finite logits predict class 0 for every image (argmax of NaN), which scores the
        # share of class 0, 100 / classes on its balanced test sets. That is the number it
        # reports, so it is this run's score too; the run keeps its diverged flag.
        record["best_acc"] = record["final_acc"] = record["chance_acc"]
        record["failure"]["scored_as"] = ("chance: diverged before its first evaluation, scored "
                                          "as the reference scores a diverged model")
    record["flags"] = run_flags(record)
    return record

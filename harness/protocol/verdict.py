"""What a run's test numbers say, torch-free (the store and the board read records without torch):
its score, the best epoch (:func:`best_index`), and whether its layer is batch-dependent
(:func:`batch_dependence`, from the batch check of :mod:`harness.protocol.scoring`).
"""

from __future__ import annotations

import math

CHECK_SAMPLE = 256  # test images scored a second time, in other batches
# A change of a predicted class probability beyond this between the two batchings flags the run
# (:func:`prediction_change`). fp32 kernels give the same image the same logits in any batch of
# the same size up to rounding (~1e-6, less in probability); a layer using batch statistics moves
# them by 1e-2 and more.
TOLERANCE = {"fp32": 1e-3, "bf16": 3e-2}


def best_index(test_acc: list[float | None]) -> int | None:
    """The protocol's score: the index of the best finite test accuracy (the first epoch that
    reached it), or None when there is none."""
    finite = [i for i, a in enumerate(test_acc) if a is not None and math.isfinite(a)]
    return max(finite, key=lambda i: (test_acc[i], -i)) if finite else None


def check_images(n_test: int, sample: int = CHECK_SAMPLE) -> int:
    """How many test images the check scores again: ``sample``, but at most half the test set,
    so that a check batch never holds exactly a protocol batch's images (batch statistics do not
    change when a batch is only reordered)."""
    return min(sample, max(1, n_test // 2))


def batch_dependence(changes: list[float | None], flips: list[int | None], precision: str,
                     sample: int) -> dict:
    """The record's ``evaluation`` summary over a run's epochs."""
    tolerance = TOLERANCE.get(precision, TOLERANCE["fp32"])
    pairs = [(c, f or 0, i + 1) for i, (c, f) in enumerate(zip(changes, flips))
             if c is not None and math.isfinite(c)]  # a model with NaN logits tells nothing
    worst = max(pairs, default=None)
    return {"check_images": sample, "tolerance": tolerance,
            "max_change": worst[0] if worst else None,
            "flips_at_max": worst[1] if worst else None,
            "epoch_of_max": worst[2] if worst else None,
            "batch_dependent": bool(worst and worst[0] > tolerance)}

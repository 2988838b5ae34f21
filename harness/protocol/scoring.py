"""Scoring: the test set's forward passes, and the test loss, accuracy and batch check from them.

Every run, trusted or not, is scored the same way. The harness fixes an evaluation plan
(:class:`EvalPlan`): the protocol's test batches (batches of ``test_batch_size`` in dataset order,
the last one partial) with a few *check* batches mixed in at random places: a random sample of
the test images, in a shuffled order, cut into batches of the same size. A forward pass over the
plan (:func:`forward_plan`, in eval mode) gives one row of logits per image of the plan. From
those logits and the labels, which only the scoring side holds, :func:`score` computes the
protocol's test loss and accuracy (from the protocol batches alone, summed batch by batch as the
reference does) and how far the check batches' logits are from the same images' logits in the
protocol batches. A layer whose output for an image depends on the rest of its batch (batch
statistics at evaluation, or anything adaptive over the test set) moves them, and the run is
flagged ``batch-dependent``: its test accuracy depends on how the test set was batched.

The check batches cannot be told from protocol batches by their size, and their place in the
plan is random, so a layer cannot behave well only while it is being checked.

In a sandboxed run the forward passes happen in processes that never see a label
(:mod:`harness.execution.worker`, ``score``), and :func:`score` runs in the trusted parent. There
the check batches are scored by a process of their own, which never sees the protocol batches
(:meth:`EvalPlan.feed`): no state a layer keeps across forward passes (a memo of the images it
has seen, statistics adapted over the test set) can make the two batchings agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.protocol.verdict import CHECK_SAMPLE, check_images


@dataclass(frozen=True)
class EvalPlan:
    """The order in which the test images are fed (``order``: test indices, protocol and check
    images together) cut into ``batches`` (sizes, in feed order); ``protocol_rows`` are the rows of
    the test images 0..N-1 in the protocol batches; ``check_rows`` and ``check_of`` the rows of the
    check batches and, for each, the protocol row of the same image."""

    n_test: int
    batch_size: int
    order: np.ndarray
    batches: tuple[int, ...]
    protocol_rows: np.ndarray
    check_rows: np.ndarray
    check_of: np.ndarray

    @classmethod
    def build(cls, n_test: int, batch_size: int, seed: int, sample: int = CHECK_SAMPLE) -> "EvalPlan":
        rng = np.random.default_rng([seed, 0xC4EC])
        protocol = [np.arange(s, min(s + batch_size, n_test)) for s in range(0, n_test, batch_size)]
        picked = rng.permutation(n_test)[:check_images(n_test, sample)]
        check = [picked[s:s + batch_size] for s in range(0, len(picked), batch_size)]
        # Each check batch goes in front of a random protocol batch (or at the end).
        slots = sorted(rng.integers(0, len(protocol) + 1, size=len(check)).tolist())
        feed, kinds, ci = [], [], 0
        for pi in range(len(protocol) + 1):
            while ci < len(check) and slots[ci] == pi:
                feed.append(check[ci])
                kinds.append("check")
                ci += 1
            if pi < len(protocol):
                feed.append(protocol[pi])
                kinds.append("protocol")
        order = np.concatenate(feed) if feed else np.zeros(0, dtype=np.int64)
        rows = np.arange(len(order))
        is_check = np.concatenate([np.full(len(b), k == "check") for b, k in zip(feed, kinds)]) \
            if feed else np.zeros(0, dtype=bool)
        protocol_rows = np.empty(n_test, dtype=np.int64)
        protocol_rows[order[~is_check]] = rows[~is_check]
        check_rows = rows[is_check]
        return cls(n_test, batch_size, order.astype(np.int64), tuple(len(b) for b in feed),
                   protocol_rows, check_rows, protocol_rows[order[is_check]])

    @property
    def rows(self) -> int:
        return len(self.order)

    def feed(self, kind: str) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
        """The ``"protocol"`` or ``"check"`` batches alone, as a sandboxed run scores them, each
        kind in a process of its own: their test indices and batch sizes in feed order, and the
        plan's rows they fill."""
        is_check = np.zeros(self.rows, dtype=bool)
        is_check[self.check_rows] = True
        want = kind == "check"
        sizes, start = [], 0
        for size in self.batches:
            if is_check[start] == want:
                sizes.append(size)
            start += size
        rows = np.flatnonzero(is_check == want)
        return self.order[rows], tuple(sizes), rows


@torch.no_grad()
def forward_plan(model: nn.Module, images: torch.Tensor, batches: tuple[int, ...],
                 prepare: Callable[[torch.Tensor], torch.Tensor], autocast,
                 mark_step: Callable[[], None] = lambda: None, timer=None) -> torch.Tensor:
    """Eval-mode logits (float32, ``[rows, classes]``) of ``images`` (uint8, in feed order), batch
    by batch; ``prepare`` normalises a batch, ``timer`` times each forward pass."""
    model.eval()
    out, start = [], 0
    for size in batches:
        x = prepare(images[start:start + size])
        start += size
        mark_step()
        with autocast():
            if timer is not None:
                timer.start()
            logits = model(x)
            if timer is not None:
                timer.stop(size)
        out.append(logits.float())
    return torch.cat(out) if out else torch.zeros(0)


@dataclass
class Scored:
    """One evaluation, as device tensors (read together with the epoch's other numbers)."""

    loss_sum: torch.Tensor  # float64: summed cross-entropy over the protocol batches
    correct: torch.Tensor  # int64
    check_change: torch.Tensor  # float64: the check batches' prediction_change
    check_flips: torch.Tensor  # int64: check images whose predicted class changed

    def values(self) -> list[torch.Tensor]:
        return [self.loss_sum, self.correct.double(), self.check_change, self.check_flips.double()]


def score(logits: torch.Tensor, labels: torch.Tensor, plan: EvalPlan) -> Scored:
    """Test loss, accuracy and the batch check from the plan's logits and the test labels."""
    device = logits.device
    rows = torch.as_tensor(plan.protocol_rows, device=device)
    ordered = logits[rows]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, plan.n_test, plan.batch_size):  # as the reference: one sum per batch
        stop = min(start + plan.batch_size, plan.n_test)
        loss_sum += F.cross_entropy(ordered[start:stop], labels[start:stop], reduction="sum").double()
    correct = (ordered.argmax(1) == labels).sum()
    if len(plan.check_rows):
        checked = logits[torch.as_tensor(plan.check_rows, device=device)]
        reference = logits[torch.as_tensor(plan.check_of, device=device)]
        change = prediction_change(checked, reference)
        flips = (checked.argmax(1) != reference.argmax(1)).sum()
    else:
        change = torch.zeros((), dtype=torch.float64, device=device)
        flips = torch.zeros((), dtype=torch.int64, device=device)
    return Scored(loss_sum, correct, change, flips)


def prediction_change(checked: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The batch check's measure (float64, on the logits' device): the largest change of a class
    probability (softmax) between an image's logits in its check batch and in its protocol batch,
    from 0 to 1. Probabilities are what a score is made of: the measure is blind to what cannot
    change a score (a shift of an image's logits, their scale, classes far below the top ones),
    and so cannot be drowned by one huge logit. Logits non-finite alike in both batchings are left
    out (NaN when nothing is left: a model with NaN logits tells nothing); one that is finite in one
    batching and not in the other, or not the same non-finite value, is the largest change, 1."""
    finite_c, finite_r = torch.isfinite(checked), torch.isfinite(reference)
    alike = (checked == reference) | (torch.isnan(checked) & torch.isnan(reference))
    mismatch = ((finite_c != finite_r) | (~finite_c & ~alike)).any()
    both = finite_c & finite_r
    low = torch.tensor(float("-inf"), dtype=torch.float64, device=checked.device)
    p_c = torch.softmax(torch.where(both, checked.double(), low), dim=1)
    p_r = torch.softmax(torch.where(both, reference.double(), low), dim=1)
    compared = both.any(1, keepdim=True)  # rows with no finite logit give NaN probabilities
    largest = torch.where(compared, (p_c - p_r).abs(), torch.zeros_like(p_c)).amax()
    nothing = torch.tensor(float("nan"), dtype=torch.float64, device=checked.device)
    return torch.where(mismatch, torch.ones_like(largest), torch.where(compared.any(), largest, nothing))

"""The run's data on the device: the training set (padded once for crop+flip), its labels, and
the test set in the evaluation plan's feed order (harness.protocol.scoring.EvalPlan), all
resident, so that an epoch never copies from the host; and the epoch's scoring of that test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.data.tensors import Dataset
from harness.engine.device import autocast
from harness.engine.instruments import BatchTimer
from harness.protocol.recipe import Recipe
from harness.protocol.scoring import EvalPlan, Scored, forward_plan, score


@dataclass(frozen=True)
class ResidentTest:
    """The test set on the device: its images in the evaluation plan's feed order, its labels."""

    plan: EvalPlan
    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class ResidentData:
    """The run's data on the device, in the layout the speed checks passed: the training set (padded
    for crop+flip, or as it is), its labels, and the test set in the evaluation plan's feed order."""

    pipeline: Any  # harness.data.tensors.make_pipeline's
    augment: bool
    train_inputs: torch.Tensor  # padded when ``augment``
    train_labels: torch.Tensor
    test: ResidentTest | None = None  # None without a test split (a sandboxed training process)

    def batch(self, idx: torch.Tensor, plan, sl: slice) -> torch.Tensor:
        if self.augment:
            return self.pipeline.train_batch(self.train_inputs[idx], plan.top[sl], plan.left[sl],
                                             plan.flip[sl])
        return self.pipeline.test_batch(self.train_inputs[idx])


def resident_data(data: Dataset, recipe: Recipe, pipeline, device: torch.device,
                  seed: int) -> ResidentData:
    """The training set on the device (padded once, for crop+flip: that is for images), and the
    test set in the evaluation plan's feed order, resident like it."""
    augment = recipe.augment and data.spec.kind == "image"
    train_inputs = (pipeline.pad(data.train.inputs) if augment else data.train.inputs).to(device)
    resident = ResidentData(pipeline, augment, train_inputs, data.train.labels.to(device))
    if data.test is not None:
        plan = EvalPlan.build(len(data.test), recipe.test_batch_size, seed)
        resident.test = ResidentTest(plan, data.test.inputs[torch.as_tensor(plan.order)].to(device),
                                     data.test.labels.to(device))
    return resident


def evaluate(fast, resident: ResidentData, device: torch.device, precision: str,
             timer: BatchTimer | None) -> Scored | None:
    """The epoch's scoring of the test set (harness.protocol.scoring.Scored, on the device), or
    None without a test split."""
    test = resident.test
    if test is None:
        return None
    logits = forward_plan(fast.model, test.images, test.plan.batches,
                          resident.pipeline.test_batch, lambda: autocast(device, precision),
                          fast.mark_step, timer)
    return score(logits, test.labels, test.plan)

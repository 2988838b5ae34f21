"""The evaluation plan and its two feeds: a sandboxed run scores the protocol batches and the
batch check's in separate processes, and the parent puts their logits back in the plan's rows;
for a layer whose output does not depend on its batch, the scores are exactly the one-process
scores (property-based)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol.scoring import EvalPlan, score
from harness.protocol.verdict import check_images

PLANS = st.builds(EvalPlan.build, st.integers(1, 3000), st.integers(1, 256), st.integers(0, 2**31))


@settings(max_examples=200, deadline=None)
@given(plan=PLANS)
def test_the_two_feeds_split_the_plan(plan):
    order, sizes, rows = plan.feed("protocol")
    assert np.array_equal(order, np.arange(plan.n_test))  # the protocol batches, in dataset order
    assert sizes == tuple(min(plan.batch_size, plan.n_test - s) for s in range(0, plan.n_test, plan.batch_size))
    c_order, c_sizes, c_rows = plan.feed("check")
    assert np.array_equal(c_rows, plan.check_rows) and np.array_equal(c_order, plan.order[plan.check_rows])
    assert len(c_order) == check_images(plan.n_test) and sum(c_sizes) == len(c_order)
    assert max(c_sizes) <= plan.batch_size
    assert np.array_equal(np.sort(np.concatenate([rows, c_rows])), np.arange(plan.rows))
    assert sorted(sizes + c_sizes) == sorted(plan.batches)


@settings(max_examples=100, deadline=None)
@given(plan=PLANS, classes=st.integers(2, 12))
def test_logits_put_back_from_both_feeds_score_as_in_one_process(plan, classes):
    per_image = torch.randn(plan.n_test, classes, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, classes, (plan.n_test,), generator=torch.Generator().manual_seed(2))
    in_one = per_image[torch.as_tensor(plan.order)]
    put_back = torch.empty(plan.rows, classes)
    for kind in ("protocol", "check"):
        order, _, rows = plan.feed(kind)
        put_back[torch.as_tensor(rows)] = per_image[torch.as_tensor(order)]
    assert torch.equal(put_back, in_one)
    a, b = score(in_one, labels, plan), score(put_back, labels, plan)
    assert all(torch.equal(x, y) for x, y in zip(a.values(), b.values()))
    assert a.check_change.item() == 0.0  # the same logits for an image, whatever its batch

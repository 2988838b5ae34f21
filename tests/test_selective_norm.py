"""SelectiveNorm: statistics over the kept units only; BatchNorm at p = 0; a clean evaluation."""

import numpy as np
import pytest
import torch
from torch import nn

from harness.vetting.submission import load

from conftest import ROOT

EPS = 1e-5


def selective(c=8, **kw):
    return load(ROOT / "submissions" / "selective_norm.py").norm_class(c, **kw)


def arm(name, c=8):
    return load(ROOT / "submissions" / f"{name}.py").norm_class(c)


def test_statistics_are_those_of_the_kept_units():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (5, 8, 6, 6))
    mask = (rng.uniform(size=x.shape) >= 0.3).astype(np.float64)
    m = selective(p=0.3).double().train()
    g, b = rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.2, 8)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(g))
        m.bias.copy_(torch.from_numpy(b))
        y = m(torch.from_numpy(x), mask=torch.from_numpy(mask)).numpy()
    for c in range(8):
        kept = x[:, c][mask[:, c] == 1]  # a direct computation over the kept elements only
        mu, var = kept.mean(), kept.var()
        expected = (g[c] * (x[:, c] - mu) / np.sqrt(var + EPS) + b[c]) / 0.7
        np.testing.assert_allclose(y[:, c][mask[:, c] == 1], expected[mask[:, c] == 1], atol=1e-10)
        assert np.all(y[:, c][mask[:, c] == 0] == 0)  # dropped units output 0
        assert m.running_mean[c].item() == pytest.approx(0.1 * mu, abs=1e-12)
        n = kept.size
        assert m.running_var[c].item() == pytest.approx(0.9 + 0.1 * var * n / (n - 1), abs=1e-12)


def test_random_mask_statistics_match_the_units_it_kept():
    torch.manual_seed(0)
    m = selective(p=0.1).double().train()
    x = torch.randn(16, 8, 8, 8, dtype=torch.float64) * 3 + 2
    with torch.no_grad():
        y = m(x)
    kept = y != 0  # a kept unit is (almost surely) non-zero after the affine transform
    assert 0.85 < kept.double().mean().item() < 0.95
    for c in range(8):
        mu = x[:, c][kept[:, c]].mean().item()
        assert m.running_mean[c].item() == pytest.approx(0.1 * mu, rel=1e-9)


def test_p_zero_is_batchnorm_in_train_and_eval():
    torch.manual_seed(0)
    ours, bn = selective(16, p=0.0), nn.BatchNorm2d(16)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.copy_(torch.randn(16))
        bn.weight.copy_(ours.weight)
        bn.bias.copy_(ours.bias)
    for step in range(4):
        x = torch.randn(8, 16, 5, 7) * (step + 1) + step
        torch.testing.assert_close(ours.train()(x), bn.train()(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, bn.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.running_var, bn.running_var, atol=1e-6, rtol=1e-5)
    x = torch.randn(3, 16, 4, 4)
    torch.testing.assert_close(ours.eval()(x), bn.eval()(x), atol=1e-6, rtol=1e-5)


def test_gradients_flow_through_the_masked_statistics():
    m = selective(4, p=0.25).double().train()
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(3, 4, 3, 3) >= 0.25).double()
    assert torch.autograd.gradcheck(lambda inp: m(inp, mask=mask), (x,))


def test_evaluation_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    m = selective(8)
    for _ in range(3):
        m.train()(torch.randn(16, 8, 6, 6))
    m.eval()
    x = torch.randn(10, 8, 6, 6)
    with torch.no_grad():
        a, b = m(x), m(x)
        alone = m(x[:1])
    assert torch.equal(a, b)
    torch.testing.assert_close(alone, a[:1], atol=1e-6, rtol=1e-6)
    assert (a != 0).all()  # no mask at evaluation


def test_rejects_an_impossible_drop_rate():
    with pytest.raises(ValueError):
        selective(p=1.0)


def test_the_four_other_arms():
    torch.manual_seed(0)
    x = torch.randn(32, 8, 6, 6) + 1
    assert torch.equal(arm("no_norm")(x), x)
    dropout = arm("dropout_only")
    assert torch.equal(dropout.eval()(x), x)
    zeros = (dropout.train()(x) == 0).double().mean().item()
    assert 0.07 < zeros < 0.13
    assert isinstance(arm("norm_only"), nn.BatchNorm2d)
    stacked = arm("dropout_then_norm").train()
    with torch.no_grad():
        y = stacked(x)
    # BatchNorm after dropout: the dropped (zeroed) units are inside its statistics, so the
    # output over all units is standardised and dropped units do not output 0.
    assert abs(y.mean().item()) < 1e-5 and (y != 0).all()
    reference = nn.BatchNorm2d(8)
    reference.load_state_dict(stacked.norm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(stacked.eval()(x), reference.eval()(x))

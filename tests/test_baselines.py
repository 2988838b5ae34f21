"""Each baseline against an independent float64 NumPy computation of the formula in its docstring."""

import numpy as np
import pytest
import torch

from harness.vetting.submission import load

EPS = 1e-5
RNG = np.random.default_rng(0)


def layer(name, c=16, **params):
    """A fresh baseline layer in float64 with (optionally) randomised parameters."""
    m = load(name).norm_class(c).double()
    with torch.no_grad():
        for pname, value in params.items():
            getattr(m, pname).copy_(torch.as_tensor(value, dtype=torch.float64))
    return m


def x_batch(b=6, c=16, h=5, w=4):
    return RNG.normal(0.3, 1.7, (b, c, h, w))


def run(m, x, train):
    m.train(train)
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def affine(c):
    return RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.3, c)


def bc(v):
    return v.reshape(1, -1, 1, 1)


def normalise(x, axes, ddof=0):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    return (x - mu) / np.sqrt(var + EPS), mu, var


def test_batch_norm():
    g, b = affine(16)
    m = layer("batch_norm", weight=g, bias=b)
    x = x_batch()
    xhat, mu, var = normalise(x, (0, 2, 3))
    np.testing.assert_allclose(run(m, x, True), bc(g) * xhat + bc(b), atol=1e-10)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    running_mean, running_var = 0.1 * mu, 0.9 + 0.1 * var * n / (n - 1)
    x2 = x_batch()
    expected = bc(g) * (x2 - running_mean) / np.sqrt(running_var + EPS) + bc(b)
    np.testing.assert_allclose(run(m, x2, False), expected, atol=1e-10)


@pytest.mark.parametrize("channels, groups", [(16, 16), (24, 24), (32, 32), (48, 24), (64, 32),
                                              (144, 24), (1280, 32)])
def test_group_norm_group_rule_and_formula(channels, groups):
    g, b = affine(channels)
    m = layer("group_norm", c=channels, weight=g, bias=b)
    assert m.num_groups == groups
    x = x_batch(c=channels, h=3, w=3)
    grouped = x.reshape(x.shape[0], groups, -1)
    xhat = normalise(grouped, (2,))[0].reshape(x.shape)
    expected = bc(g) * xhat + bc(b)
    for train in (True, False):
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-9)


def test_batch_instance_norm_reference():
    g, b = affine(16)
    rho = RNG.normal(1.0, 1.0, 16)
    m = layer("batch_instance_norm", weight=g, bias=b, rho=rho)
    x = x_batch()
    gate = bc(1 / (1 + np.exp(-rho)))
    expected = bc(g) * (gate * normalise(x, (0, 2, 3))[0] + (1 - gate) * normalise(x, (2, 3))[0]) + bc(b)
    for train in (True, False):  # batch statistics in both modes
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-10)
    assert abs(1 / (1 + np.exp(-1.0)) - 0.7311) < 1e-4  # the documented initial gate


def test_switchable_norm_reference():
    g, b = affine(16)
    wm, wv = RNG.normal(1, 0.5, 3), RNG.normal(1, 0.5, 3)
    m = layer("switchable_norm", weight=g, bias=b, mean_logits=wm, var_logits=wv)
    x = x_batch()
    stats = [(x.mean(axis=a, keepdims=True), x.var(axis=a, keepdims=True))
             for a in ((2, 3), (1, 2, 3), (0, 2, 3))]  # IN, LN, BN
    sm = lambda v: np.exp(v) / np.exp(v).sum()  # noqa: E731
    mu = sum(w * s[0] for w, s in zip(sm(wm), stats))
    var = sum(w * s[1] for w, s in zip(sm(wv), stats))
    expected = bc(g) * (x - mu) / np.sqrt(var + EPS) + bc(b)
    for train in (True, False):
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-10)


def test_switchable_norm_paper():
    g, b = affine(16)
    wm, wv = RNG.normal(1, 0.5, 3), RNG.normal(1, 0.5, 3)
    m = layer("switchable_norm_paper", weight=g, bias=b, mean_logits=wm, var_logits=wv)
    x = x_batch()
    mu_in, var_in = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True, ddof=1)
    second = var_in + mu_in ** 2
    mu_ln = mu_in.mean(axis=1, keepdims=True)
    var_ln = second.mean(axis=1, keepdims=True) - mu_ln ** 2
    mu_bn = mu_in.mean(axis=0, keepdims=True)
    var_bn = second.mean(axis=0, keepdims=True) - mu_bn ** 2
    sm = lambda v: np.exp(v) / np.exp(v).sum()  # noqa: E731

    def output(mb, vb, xx, mi, vi, ml, vl):
        mu = sm(wm)[0] * mi + sm(wm)[1] * ml + sm(wm)[2] * mb
        var = sm(wv)[0] * vi + sm(wv)[1] * vl + sm(wv)[2] * vb
        return bc(g) * (xx - mu) / np.sqrt(var + EPS) + bc(b)

    np.testing.assert_allclose(run(m, x, True), output(mu_bn, var_bn, x, mu_in, var_in, mu_ln, var_ln),
                               atol=1e-10)
    run_mu, run_var = 0.003 * mu_bn, 0.003 * var_bn  # buffers start at zero, keep 0.997
    x2 = x_batch()
    mi2, vi2 = x2.mean(axis=(2, 3), keepdims=True), x2.var(axis=(2, 3), keepdims=True, ddof=1)
    ml2 = mi2.mean(axis=1, keepdims=True)
    vl2 = (vi2 + mi2 ** 2).mean(axis=1, keepdims=True) - ml2 ** 2
    np.testing.assert_allclose(run(m, x2, False), output(run_mu, run_var, x2, mi2, vi2, ml2, vl2),
                               atol=1e-10)


def test_batch_instance_norm_paper():
    g, b = affine(16)
    gate = np.concatenate([RNG.uniform(0, 1, 12), [1.7, -0.4, 1.0, 0.0]])  # 2 outside [0, 1]
    m = layer("batch_instance_norm_paper", weight=g, bias=b, gate_theta=gate / np.sqrt(10))
    x = x_batch()
    clipped = bc(np.clip(gate, 0, 1))
    xhat_bn, mu, var = normalise(x, (0, 2, 3))
    expected = bc(g) * (clipped * xhat_bn + (1 - clipped) * normalise(x, (2, 3))[0]) + bc(b)
    np.testing.assert_allclose(run(m, x, True), expected, atol=1e-10)
    np.testing.assert_allclose(m.gate.detach().numpy(), np.clip(gate, 0, 1), atol=1e-12)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    run_mu, run_var = 0.1 * mu, 0.9 + 0.1 * var * n / (n - 1)
    x2 = x_batch()
    bn_eval = (x2 - run_mu) / np.sqrt(run_var + EPS)
    expected2 = bc(g) * (clipped * bn_eval + (1 - clipped) * normalise(x2, (2, 3))[0]) + bc(b)
    np.testing.assert_allclose(run(m, x2, False), expected2, atol=1e-10)


def test_batch_instance_norm_paper_gate_learns_ten_times_faster():
    """SGD on theta with rho = sqrt(10) theta moves rho as SGD with 10x the learning rate would."""
    m = load("batch_instance_norm_paper").norm_class(4).double()
    x = torch.from_numpy(x_batch(c=4))
    m.train()
    (m(x) * torch.from_numpy(x_batch(c=4))).sum().backward()
    drho_dtheta = np.sqrt(10)
    grad_rho = m.gate_theta.grad / drho_dtheta
    before = m.gate.detach().clone()
    with torch.no_grad():
        m.gate_theta -= 0.01 * m.gate_theta.grad
    np.testing.assert_allclose((m.gate - before).detach().numpy(), (-0.1 * grad_rho).numpy(), rtol=1e-9)


def test_layer_norm():
    g, b = affine(16)
    m = layer("layer_norm", weight=g, bias=b)
    x = x_batch()
    expected = bc(g) * normalise(x, (1, 2, 3))[0] + bc(b)
    for train in (True, False):
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-10)


def test_instance_norm():
    g, b = affine(16)
    m = layer("instance_norm", weight=g, bias=b)
    x = x_batch()
    expected = bc(g) * normalise(x, (2, 3))[0] + bc(b)
    for train in (True, False):
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-10)


def test_rms_norm():
    g = RNG.uniform(0.5, 1.5, 16)
    m = layer("rms_norm", weight=g)
    x = x_batch()
    expected = bc(g) * x / np.sqrt((x ** 2).mean(axis=(1, 2, 3), keepdims=True) + EPS)
    for train in (True, False):
        np.testing.assert_allclose(run(m, x, train), expected, atol=1e-10)
    assert not hasattr(m, "bias") or m.bias is None

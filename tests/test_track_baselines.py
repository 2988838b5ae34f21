"""Baselines beyond CNNs: each says which tracks it supports, and fits their layouts ([B, C, *positions])."""

import pytest
import torch
from torch import nn

from harness.models.nets import MLP, EncoderShape, RecurrentNet, SequenceTransformer, VisionTransformer
from harness.protocol.catalog import TRACKS, InputSpec
from harness.protocol.entries import baseline_names, baselines_dir, declared_tracks
from harness.vetting.submission import load

from conftest import ROOT

LAYOUTS = {"cnn": (4, 16, 5, 5), "mlp": (4, 16), "rnn": (4, 16, 7), "transformer": (4, 16, 7)}
EVERY_TRACK = {"batch_norm", "group_norm", "layer_norm", "rms_norm", "layer_norm_per_position",
               "rms_norm_per_position", "dyt"}


def norm(name):
    return load(name).norm_class


def test_which_baselines_support_which_tracks():
    supports = {name: declared_tracks(baselines_dir() / f"{name}.py") for name in baseline_names()}
    assert {n for n, t in supports.items() if t == tuple(TRACKS)} == EVERY_TRACK
    # The reference's own formulations stay as the reference wrote them: CNN layers.
    assert supports["switchable_norm"] == supports["batch_instance_norm"] == ("cnn",)
    assert declared_tracks(ROOT / "custom_norm.py") == ("cnn",)  # no TRACKS: the reference format


@pytest.mark.parametrize("name", sorted(EVERY_TRACK))
@pytest.mark.parametrize("track", list(TRACKS))
def test_a_layer_keeps_the_shape_of_its_tracks_layout_and_learns(name, track):
    layer = norm(name)(16)
    x = torch.randn(*LAYOUTS[track], dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    layer.eval()
    assert layer(x).shape == x.shape


def test_per_position_layer_norm_is_a_transformers_layer_norm():
    x = torch.randn(3, 16, 7)  # [B, C, T]
    reference = nn.LayerNorm(16)
    assert torch.allclose(norm("layer_norm_per_position")(16)(x),
                          reference(x.transpose(1, 2)).transpose(1, 2), atol=1e-6)
    pixels = torch.randn(2, 16, 3, 3)  # per pixel, over channels, as ConvNeXt's
    ours = norm("layer_norm_per_position")(16)(pixels)
    assert torch.allclose(ours.mean(1), torch.zeros(2, 3, 3), atol=1e-5)


def test_rms_norm_per_position_and_dyt_follow_their_formulas():
    x = torch.randn(3, 16, 7)
    rms = norm("rms_norm_per_position")(16)
    assert torch.allclose(rms(x), x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-5), atol=1e-6)
    dyt = norm("dyt")(16)
    assert dyt.alpha.item() == 0.5  # the paper's default initialisation
    assert torch.allclose(dyt(x), torch.tanh(0.5 * x))
    assert dyt(x[:1]).equal(dyt(x)[:1])  # elementwise: no batch statistics


def test_batch_norm_is_torchs_batchnorm_on_every_layout():
    ours = norm("batch_norm")(16)
    torch.manual_seed(0)
    for x, reference in [(torch.randn(8, 16, 4, 4), nn.BatchNorm2d(16)),
                         (torch.randn(8, 16, 5), nn.BatchNorm1d(16)),
                         (torch.randn(8, 16), nn.BatchNorm1d(16))]:
        ours.reset_running_stats()
        assert torch.equal(ours(x), reference(x))
        assert torch.equal(ours.running_var, reference.running_var)
    with pytest.raises(ValueError, match="expected"):
        ours(torch.randn(16))


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm_per_position", "dyt"])
def test_every_track_model_trains_a_step_with_a_baseline(name):
    layer = norm(name)
    models = [
        (MLP(64, 10, layer, width=32, depth=2), torch.randn(8, 64)),
        (RecurrentNet(InputSpec("sequence", (8, 8)), 10, layer, width=16, depth=2), torch.randn(8, 8, 8)),
        (SequenceTransformer(InputSpec("tokens", (12,), vocab_size=30), 10, layer,
                             EncoderShape(width=16, depth=2, heads=2, mlp_ratio=2)),
         torch.randint(0, 30, (8, 12))),
        (VisionTransformer(InputSpec("image", (3, 32, 32)), 10, layer,
                           EncoderShape(width=32, depth=2, heads=2, mlp_ratio=1), patch=8),
         torch.randn(8, 3, 32, 32)),
    ]
    for model, x in models:
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,)))
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)


def test_generalising_rms_norm_left_its_cnn_computation_as_it_was():
    x = torch.randn(4, 16, 5, 5)
    before = x / torch.sqrt(x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)  # the CNN-only file's
    assert torch.equal(norm("rms_norm")(16)(x), before)


ARMS = ["selective_norm", "no_norm", "dropout_only", "norm_only", "dropout_then_norm"]


@pytest.mark.parametrize("arm", ARMS)
def test_selective_norm_and_its_arms_fit_every_track(arm):
    path = ROOT / "submissions" / f"{arm}.py"
    assert declared_tracks(path) == tuple(TRACKS)
    layer = load(str(path)).norm_class(16)
    for track, shape in LAYOUTS.items():
        x = torch.randn(*shape, requires_grad=True)
        y = layer.train()(x)
        assert y.shape == x.shape, track
        y.sum().backward()
        assert layer.eval()(x).shape == x.shape


def test_selective_norm_without_dropout_is_batchnorm_on_sequences_and_features():
    selective = load(str(ROOT / "submissions" / "selective_norm.py")).norm_class
    for shape in [(8, 16, 5), (8, 16)]:
        x = torch.randn(*shape)
        ours, reference = selective(16, p=0.0), nn.BatchNorm1d(16)
        assert torch.allclose(ours(x), reference(x), atol=1e-5)
        assert torch.allclose(ours.running_var, reference.running_var, atol=1e-6)
        ours.eval(), reference.eval()
        assert torch.allclose(ours(x), reference(x), atol=1e-5)

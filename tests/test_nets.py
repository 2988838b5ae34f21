"""The MLP, recurrent and Transformer tracks' architectures: sizes, norm slots, the layout contract."""

import pytest
import torch
from torch import nn

from harness.models.nets import (
    MLP,
    ChannelsSecond,
    EncoderShape,
    RecurrentNet,
    SequenceTransformer,
    VisionTransformer,
)
from harness.protocol.catalog import InputSpec


class LayerNormPerPosition(nn.Module):
    """nn.LayerNorm over channels, for [B, C, *positions]: what a Transformer's LayerNorm is."""

    def __init__(self, num_features):
        super().__init__()
        self.norm = nn.LayerNorm(num_features)

    def forward(self, x):
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class Recording(nn.Module):
    """A norm that records the shapes it is given."""

    seen: list = []

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        Recording.seen.append((self.num_features, tuple(x.shape)))
        return x


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_vit_lite_7_4_has_the_papers_size():
    # ViT-Lite-7/4 on CIFAR-10: 3.72M parameters in Hassani et al. 2021, Table 2.
    model = VisionTransformer(InputSpec("image", (3, 32, 32)), 10, LayerNormPerPosition,
                              EncoderShape(width=256, depth=7, heads=4, mlp_ratio=2), patch=4)
    assert count(model) == 3_716_874 and round(count(model) / 1e6, 2) == 3.72


def test_a_transformers_norms_see_channels_second_and_every_slot_is_filled():
    Recording.seen = []
    model = SequenceTransformer(InputSpec("tokens", (12,), vocab_size=50), 2, Recording,
                                EncoderShape(width=16, depth=3, heads=2, mlp_ratio=2))
    model(torch.randint(1, 50, (5, 12)))
    assert Recording.seen == [(16, (5, 16, 12))] * 7  # 2 per block and the final norm
    slots = [m for m in model.modules() if isinstance(m, ChannelsSecond)]
    assert len(slots) == 7 and all(isinstance(s.norm, Recording) for s in slots)


def test_an_mlps_norms_see_batch_by_channels():
    Recording.seen = []
    model = MLP(64, 10, Recording, width=100, depth=3)
    assert model(torch.randn(4, 64)).shape == (4, 10)
    assert Recording.seen == [(100, (4, 100))] * 3
    # The BatchNorm paper's MNIST network: 784-100-100-100-10.
    linear = 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
    assert count(MLP(784, 10, nn.BatchNorm1d, width=100, depth=3)) == linear + 3 * 200  # + gamma, beta


def test_a_recurrent_nets_norm_sits_between_layers_and_sees_channels_second():
    Recording.seen = []
    model = RecurrentNet(InputSpec("sequence", (8, 8)), 10, Recording, width=32, depth=2)
    assert model(torch.randn(3, 8, 8)).shape == (3, 10)
    assert Recording.seen == [(32, (3, 32, 8))] * 2


def test_padding_is_neither_attended_nor_pooled():
    """With a per-position norm, what the padded steps hold cannot reach the output: changing
    their position embeddings changes nothing."""
    torch.manual_seed(0)
    model = SequenceTransformer(InputSpec("tokens", (6,), vocab_size=20), 2, LayerNormPerPosition,
                                EncoderShape(width=16, depth=2, heads=2, mlp_ratio=2)).eval()
    short = torch.tensor([[5, 6, 7, 0, 0, 0]])
    before = model(short)
    with torch.no_grad():
        model.position[:, 3:] += torch.randn(1, 3, 16)
        assert torch.allclose(model(short), before, atol=1e-6)
        model.position[:, :3] += torch.randn(1, 3, 16)  # (a constant shift, LayerNorm removes)
        assert not torch.allclose(model(short), before, atol=1e-3)


# (arch, dataset): parameters with BatchNorm in every slot, and the number of slots. The counts
# are those docs/tracks.md states; ViT-Lite-7/4 on CIFAR-10 is the paper's 3.72M.
SIZES = [("mlp3x100", "mnist", 100_310, 3), ("mlp3x512", "mnist", 935_434, 3),
         ("mlp3x100", "adult", 31_602, 3), ("lstm2", "imdb", 2_825_218, 2),
         ("gru2", "imdb", 2_759_170, 2), ("transformer4", "imdb", 3_121_922, 9),
         ("transformer4", "digits_rows", 532_106, 9), ("vit_lite7", "cifar10", 3_716_874, 15),
         ("vit_lite7", "cifar100", 3_740_004, 15), ("vit_lite2", "digits", 214_666, 5)]


@pytest.mark.parametrize("arch, dataset, params, slots", SIZES)
def test_each_tracks_architecture_has_its_stated_size_and_every_slot_from_the_factory(
        arch, dataset, params, slots):
    from harness.models import build_model
    from harness.protocol.catalog import DATASETS

    spec, made = DATASETS[dataset], []

    def factory(c):
        made.append(torch.nn.BatchNorm1d(c))
        return made[-1]

    model = build_model(arch, spec.num_classes, factory, inputs=spec.inputs())
    assert count(model) == params and len(made) == slots
    # No norm of the model's own: every normalising module is one the factory returned.
    own = [m for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm,
                                                        torch.nn.modules.batchnorm._NormBase))]
    assert {id(m) for m in own} == {id(m) for m in made}

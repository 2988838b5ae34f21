import pytest
import torch
from torch import nn

import harness
from harness.models import batch_norm_for, build_model, count_parameters, init_weights
from harness.protocol.catalog import ARCHITECTURES, DATASETS, example_inputs, imported

CNNS = [name for name, info in ARCHITECTURES.items() if info.track == "cnn"]

# The protocol's parameter counts with BatchNorm (10 / 100 classes).
PROTOCOL_PARAMS = {
    "resnet20": (272_474, 278_324),
    "resnet56": (855_770, 861_620),
    "resnet110": (1_730_714, 1_736_564),
    "vgg16bn": (14_990_922, 15_037_092),
    "mobilenetv2": (2_236_682, 2_351_972),
}

# Norm slots per architecture: ResNet 1 stem + 2 per block + 2 option-B shortcuts; VGG one per
# conv; MobileNetV2 stem + 2 (t=1 block) + 3 x 16 blocks + the 1280-channel last norm.
NORM_SLOTS = {"resnet20": 21, "resnet56": 57, "resnet110": 111, "vgg11bn": 8, "vgg13bn": 10,
              "vgg16bn": 13, "vgg19bn": 16, "mobilenetv2": 52}


@pytest.mark.parametrize("arch", sorted(PROTOCOL_PARAMS))
@pytest.mark.parametrize("which", [0, 1])
def test_parameter_counts_match_protocol(arch, which):
    classes = (10, 100)[which]
    model = build_model(arch, classes, nn.BatchNorm2d)
    assert count_parameters(model) == PROTOCOL_PARAMS[arch][which]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_entry_builds_with_its_stated_parameter_count(arch):
    """The registry carries its implementation: each entry names its builder and its count."""
    info = ARCHITECTURES[arch]
    assert callable(imported(info.builder))
    model = build_model(arch, 10, batch_norm_for(info.track), inputs=example_inputs(info.takes[0]))
    assert count_parameters(model) == info.parameters


def test_each_dataset_entry_names_a_loader_and_its_files():
    """A built-in dataset names the function that makes it; one of published files names its
    reader, and its files are catalogued (harness.data.files.PUBLISHED)."""
    from harness.data.files import PUBLISHED

    for name, spec in DATASETS.items():
        assert callable(imported(spec.loader)), name
        assert min(spec.sizes) > 0, name
        assert (name in PUBLISHED) != bool(spec.built_in), name
    assert set(PUBLISHED) <= set(DATASETS)


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.built_in])
def test_a_built_in_datasets_sizes_are_what_its_loader_makes(name):
    from harness.data.tensors import load_dataset

    data = load_dataset(name)
    assert (len(data.train), len(data.test)) == DATASETS[name].sizes


def test_public_api_is_exported():
    model = harness.build_model("resnet20", 10, nn.BatchNorm2d)
    assert count_parameters(model) == PROTOCOL_PARAMS["resnet20"][0]
    assert callable(harness.load_submission)


@pytest.mark.parametrize("arch", CNNS)
def test_output_shape(arch):
    model = build_model(arch, 100, nn.BatchNorm2d).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


class Marker(nn.Module):
    """A norm that records every construction, so the test can see which slots it filled."""

    built: list[int] = []

    def __init__(self, num_features):
        super().__init__()
        Marker.built.append(num_features)
        self.num_features = num_features

    def forward(self, x):
        assert x.shape[1] == self.num_features
        return x


@pytest.mark.parametrize("arch", CNNS)
def test_every_norm_slot_comes_from_the_factory(arch):
    Marker.built = []
    model = build_model(arch, 10, Marker)
    markers = [m for m in model.modules() if isinstance(m, Marker)]
    assert len(Marker.built) == len(markers) == NORM_SLOTS[arch]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))  # channel counts checked inside Marker.forward
    if arch.startswith("resnet"):
        shortcut_norms = [m for name, m in model.named_modules()
                          if ".shortcut." in name and isinstance(m, Marker)]
        assert [m.num_features for m in shortcut_norms] == [32, 64]
    if arch == "mobilenetv2":
        assert markers[-1].num_features == 1280


def test_factories_do_not_leak_between_models():
    a = build_model("resnet20", 10, nn.BatchNorm2d)
    b = build_model("resnet20", 10, lambda c: nn.GroupNorm(min(16, c), c))
    assert any(isinstance(m, nn.BatchNorm2d) for m in a.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())


def test_initialisation_follows_protocol():
    torch.manual_seed(0)
    model = build_model("resnet56", 10, nn.BatchNorm2d)
    conv = model.layer3[0].conv1  # 32 -> 64, 3x3: fan_out = 64 * 9
    expected = (2.0 / (64 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    fc = model.fc  # fan_in = 64
    assert abs(fc.weight.std().item() - (2.0 / 64) ** 0.5) / (2.0 / 64) ** 0.5 < 0.25
    assert torch.all(fc.bias == 0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    vgg = build_model("vgg11bn", 10, nn.BatchNorm2d)
    first = vgg.features[0]
    assert first.bias is not None and not torch.all(first.bias == 0)  # conv bias untouched


class HalfScaleNorm(nn.Module):
    """Initialises its own 1-D weight to 0.5: the protocol's catch-all rule overwrites it."""

    def __init__(self, num_features):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_features,), 0.5))
        self.bias = nn.Parameter(torch.full((num_features,), 0.1))
        self.gain = nn.Parameter(torch.full((1, num_features, 1, 1), 0.5))  # 4-D: left alone

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) * self.gain + self.bias.view(1, -1, 1, 1)


def test_catch_all_rule_overwrites_and_reports():
    model, report = build_model("resnet20", 10, HalfScaleNorm, return_init_report=True)
    norms = [m for m in model.modules() if isinstance(m, HalfScaleNorm)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert all(torch.all(m.gain == 0.5) for m in norms)
    assert len(report.overwritten) == 2 * len(norms)
    assert "bn1.weight" in report.overwritten
    assert "weight=1" in report.message()


def test_batchnorm_and_unit_initialised_layers_are_not_reported():
    _, report = build_model("resnet20", 10, nn.BatchNorm2d, return_init_report=True)
    assert report.overwritten == [] and report.message() is None

    class OwnUnitNorm(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

        def forward(self, x):
            return x

    assert init_weights(build_model("resnet20", 10, OwnUnitNorm)).overwritten == []


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet18", 10, nn.BatchNorm2d)

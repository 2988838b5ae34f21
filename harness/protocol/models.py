"""The fixed architectures of the reference protocol, built around an injected norm layer.

Every model takes ``norm_layer: Callable[[int], nn.Module]`` the way torchvision's ResNet does,
and calls it once per normalisation slot (shortcuts and MobileNetV2's 1280-channel last norm
included). Nothing here knows about ``CustomNorm``: the caller decides which class fills the slots.

After construction, :func:`init_weights` applies the protocol's initialisation, including its rule
that *any other module with a 1-D weight* gets weight 1 and bias 0, which overwrites whatever a
submission set itself. :func:`build_model` builds, initialises and reports such overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from harness.protocol.catalog import ARCHITECTURES, InputSpec, imported, track_of
from harness.protocol.nets import MLP, EncoderShape, RecurrentNet, SequenceTransformer, VisionTransformer

NormLayer = Callable[[int], nn.Module]

# Norm classes the protocol initialises by name (weight 1, bias 0). Anything else with a 1-D
# weight gets the same treatment through the catch-all rule, and that is what users must be told.
_PROTOCOL_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


# --------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016), option-B shortcuts
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3(stride) -> norm -> ReLU -> conv3x3 -> norm, + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = norm_layer(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = norm_layer(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                norm_layer(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, no max-pool, global average pool."""

    def __init__(self, blocks_per_stage: int, num_classes: int, norm_layer: NormLayer):
        super().__init__()
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = norm_layer(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], 16
        for out_ch, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_ch, out_ch, stride if i == 0 else 1, norm_layer))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# VGG-BN with the reference's small head
# --------------------------------------------------------------------------------------------

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """conv3x3 (with bias) -> norm -> ReLU blocks and 2x2 max-pools; avg-pool, 512-512-classes head."""

    def __init__(self, config: list[int | str], num_classes: int, norm_layer: NormLayer):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1, bias=True),
                           norm_layer(int(v)), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------------
# MobileNetV2, CIFAR variant (stride-1 stem, stride 1 in the second stage)
# --------------------------------------------------------------------------------------------

# (expansion t, output channels c, blocks n, first stride s)
MOBILENETV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """[1x1 expand, norm, ReLU6] -> depthwise 3x3, norm, ReLU6 -> 1x1 project, norm (+ input)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int, norm_layer: NormLayer):
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_ch, hidden, 1, bias=False), norm_layer(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            norm_layer(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False), norm_layer(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Width 1.0; stem conv3x3 3->32 stride 1; last 1x1 conv 320->1280; no dropout."""

    def __init__(self, num_classes: int, norm_layer: NormLayer):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, stride=1, padding=1, bias=False),
                                   norm_layer(32), nn.ReLU6(inplace=True)]
        in_ch = 32
        for t, c, n, s in MOBILENETV2_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t, norm_layer))
                in_ch = c
        layers += [nn.Conv2d(in_ch, 1280, 1, bias=False), norm_layer(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


# Each architecture's builder, as its catalogue entry names it (harness.protocol.catalog.ArchInfo):
# (inputs, num_classes, norm_layer) -> model. The CNNs are built for 32x32 images whatever
# ``inputs`` says; the other tracks' models (harness.protocol.nets) are sized by it.


def resnet20(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(3, k, norm)


def resnet56(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(9, k, norm)


def resnet110(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return CifarResNet(18, k, norm)


def vgg11bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg11bn"], k, norm)


def vgg13bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg13bn"], k, norm)


def vgg16bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg16bn"], k, norm)


def vgg19bn(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VGG(VGG_CONFIGS["vgg19bn"], k, norm)


def mobilenetv2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MobileNetV2(k, norm)


def mlp3x100(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MLP(inputs.shape[0], k, norm, width=100, depth=3)


def mlp3x512(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return MLP(inputs.shape[0], k, norm, width=512, depth=3)


def lstm2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return RecurrentNet(inputs, k, norm, width=128, depth=2, cell="lstm")


def gru2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return RecurrentNet(inputs, k, norm, width=128, depth=2, cell="gru")


def transformer4(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return SequenceTransformer(inputs, k, norm, EncoderShape(width=128, depth=4, heads=4, mlp_ratio=2))


def vit_lite7(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    """ViT-Lite-7/4 as in Hassani et al. 2021, Table 1 (CIFAR): 3.72M parameters."""
    return VisionTransformer(inputs, k, norm, EncoderShape(width=256, depth=7, heads=4, mlp_ratio=2),
                             patch=4)


def vit_lite2(inputs: InputSpec, k: int, norm: NormLayer) -> nn.Module:
    return VisionTransformer(inputs, k, norm, EncoderShape(width=128, depth=2, heads=2, mlp_ratio=1),
                             patch=4)


@dataclass
class InitReport:
    """Which parameters the protocol's initialisation overwrote with values a submission did not choose."""

    overwritten: list[str] = field(default_factory=list)

    def message(self) -> str | None:
        if not self.overwritten:
            return None
        shown = ", ".join(self.overwritten[:4]) + (" ..." if len(self.overwritten) > 4 else "")
        return (f"the protocol's initialisation set weight=1 / bias=0 on {len(self.overwritten)} "
                f"parameter(s) your layer initialised differently ({shown}); "
                "the reference does the same, so this is reproduced, not fixed")


def _is_unit_init_target(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return False
    if isinstance(module, _PROTOCOL_NORM_TYPES):
        return True
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 1


@torch.no_grad()
def init_weights(model: nn.Module) -> InitReport:
    """Apply the protocol's initialisation to every module, in ``model.modules()`` order.

    Conv2d: Kaiming normal (fan_out, relu), bias untouched. Linear: Kaiming normal (fan_in, relu),
    bias 0. BatchNorm2d/GroupNorm/InstanceNorm2d/LayerNorm and *any other module with a 1-D
    ``weight``*: weight 1, bias 0. Returns the weight/bias parameters whose value this changed,
    i.e. where a layer's own initialisation was overwritten (torch's norms start at 1/0 already).
    """
    report = InitReport()
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif _is_unit_init_target(m):
            for pname, value in (("weight", 1.0), ("bias", 0.0)):
                tensor = getattr(m, pname, None)
                if not isinstance(tensor, torch.Tensor):
                    continue
                if not bool((tensor == value).all()):
                    report.overwritten.append(f"{name}.{pname}" if name else pname)
                tensor.fill_(value)
    return report


def build_model(arch: str, num_classes: int, norm_layer: NormLayer, *,
                inputs: InputSpec | None = None, return_init_report: bool = False):
    """Build ``arch`` with ``norm_layer`` in every norm slot. A CNN gets the protocol's
    initialisation; the other tracks' models (:mod:`harness.protocol.nets`) keep their own and
    need ``inputs``, what they are fed.

    >>> model = build_model("resnet20", 10, torch.nn.BatchNorm2d)
    """
    model = construct(arch, num_classes, norm_layer, inputs)
    report = init_weights(model) if track_of(arch) == "cnn" else InitReport()
    return (model, report) if return_init_report else model


def construct(arch: str, num_classes: int, norm_layer: NormLayer,
              inputs: InputSpec | None = None) -> nn.Module:
    """``arch`` with ``norm_layer`` in every slot, as its constructor leaves it (no protocol
    initialisation: :func:`build_model` adds it; under ``torch.device("meta")``, sizes only)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    info = ARCHITECTURES[arch]
    if inputs is None:
        if info.track != "cnn":
            raise ValueError(f"{arch} needs the inputs it is fed (an InputSpec)")
        inputs = InputSpec("image", (3, 32, 32))
    return imported(info.builder)(inputs, num_classes, norm_layer)


def batch_norm_for(track: str) -> type[nn.Module]:
    """torch's BatchNorm for a track's layout: 2d on ``[B, C, H, W]``, 1d on ``[B, C]`` and
    ``[B, C, T]`` (what other layers are measured against)."""
    return nn.BatchNorm2d if track == "cnn" else nn.BatchNorm1d


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

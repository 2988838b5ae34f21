"""The reference protocol's CNNs (CIFAR ResNets, VGG with a norm after every conv, MobileNetV2),
built around an injected norm layer.

Every model takes ``norm_layer: Callable[[int], nn.Module]`` the way torchvision's ResNet does,
and calls it once per normalisation slot (shortcuts and MobileNetV2's 1280-channel last norm
included). Nothing here knows about ``CustomNorm``: the caller decides which class fills the slots.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]



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
        self.shortcut: nn.Module
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

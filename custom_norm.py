"""CustomNorm: the one class you edit. A drop-in replacement for nn.BatchNorm2d.

Contract: ``CustomNorm(num_features)``; input and output ``[B, C, H, W]``. It fills every norm
slot of the benchmark's models (residual shortcuts and MobileNetV2's last 1280-channel norm too).

Heads-up from the protocol: after the model is built, any module with a 1-D ``weight`` gets
weight=1 and bias=0, overwriting your own initialisation of those two (the harness warns).

Run it:
    harness eval custom_norm.py --arch resnet20 --dataset digits --epochs 15   # offline demo
    python custom_norm.py --arch resnet20 --dataset cifar10 --seed 42          # reference flags
"""

import torch
from torch import nn


class CustomNorm(nn.Module):
    """Default body: BatchNorm2d. y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias,
    with E and Var over (B, H, W) per channel in training and running averages in evaluation."""

    def __init__(self, num_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


if __name__ == "__main__":
    # The reference script's command line; only this file's CustomNorm is used for training.
    from harness.cli.reference import main

    main(__file__)

"""Placement study, arm "post-activation BN" (seed 001: Conv -> ReLU -> BN), as far as a drop-in can.

In the norm slot of VGG (conv -> [slot] -> ReLU) this layer computes y = BN(ReLU(x)). The model's
own ReLU still follows, so the network computes ReLU(BN(ReLU(x))): BN's negative outputs are cut,
which the seed's Conv -> ReLU -> BN does not do. Not exact; see studies/placement.toml.
"""

import torch
from torch import nn


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(x))

"""Placement study, arm "dropout first" (seed 001: Conv -> ReLU -> Dropout -> BN), approximately.

In the norm slot of VGG (conv -> [slot] -> ReLU) this layer computes y = BN(Dropout_p(ReLU(x))).
The model's own ReLU still follows and cuts BN's negative outputs, which the seed's order does not:
not exact; see studies/placement.toml. Dropout rates grow with depth as in the seed (0.1 to 0.4),
read from the channel count: p = 0.1, 0.2, 0.3, 0.4 for 64, 128, 256, 512 channels.
"""

import torch
from torch import nn


def drop_rate(num_features: int) -> float:
    return {64: 0.1, 128: 0.2, 256: 0.3}.get(num_features, 0.4)


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.dropout = nn.Dropout(drop_rate(num_features))
        self.norm = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(torch.relu(x)))

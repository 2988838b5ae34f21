"""Placement study, arm "BN first" (seed 001: Conv -> BN -> ReLU -> Dropout). Exact in VGG.

In the norm slot of VGG (conv -> [slot] -> ReLU) this layer computes y = Dropout_p(ReLU(BN(x))).
The model's ReLU that follows changes nothing: dropout keeps the sign of its input (it zeroes or
scales by 1 / (1 - p) > 0), so ReLU(y) = y.

The seed raises its dropout rate with depth (0.1 to 0.4); a drop-in layer knows only its channel
count, which in VGG-11 grows with depth: p = 0.1, 0.2, 0.3, 0.4 for 64, 128, 256, 512 channels.
"""

import torch
from torch import nn


def drop_rate(num_features: int) -> float:
    return {64: 0.1, 128: 0.2, 256: 0.3}.get(num_features, 0.4)


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features)
        self.dropout = nn.Dropout(drop_rate(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.relu(self.norm(x)))

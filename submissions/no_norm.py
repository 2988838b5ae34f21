"""Arm 1 of the selective-normalization comparison: no normalisation and no dropout (identity).

y = x. With the protocol's bias-free convs this leaves the ResNets without any normalisation;
expect them to train worse, or diverge at lr 0.1: that is the comparison's point.
"""

import torch
from torch import nn

TRACKS = ("cnn", "mlp", "rnn", "transformer")


class CustomNorm(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

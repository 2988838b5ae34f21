"""Turns NaN after a few training steps in its seed-2 run."""
import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def __init__(self, num_features):
        super().__init__(num_features)
        self.calls = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training and torch.initial_seed() == 2:
            self.calls += 1
            if self.calls > 1:
                out = out * float("nan")
        return out

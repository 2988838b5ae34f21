"""Allocates memory without bound in its seed-2 run."""
import torch
from torch import nn

HOARD = []


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            while True:
                HOARD.append(torch.ones(1 << 26))  # 256 MiB at a time, every page touched
        return super().forward(x)

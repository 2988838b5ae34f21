"""Starts another program in its seed-2 run."""
import subprocess

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            subprocess.run(["touch", "@MARKER@"], check=True)
        return super().forward(x)

"""Writes a file outside its own directory in its seed-2 run."""
import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            with open("@MARKER@", "w") as fh:
                fh.write("escaped")
        return super().forward(x)

"""Prints 100 MB in one line without an end, then 100 MB more in lines."""
import sys

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            chunk = "y" * (1 << 20)
            for _ in range(100):
                sys.stdout.write(chunk)
            sys.stdout.write("\n")
            for _ in range(100):
                sys.stdout.write((("z" * 1023) + "\n") * 1024)
            sys.stdout.flush()
            raise RuntimeError("flooded")
        return super().forward(x)

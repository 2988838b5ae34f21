"""Starts a thousand threads; says how many it got."""
import threading
import time

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            started = 0
            try:
                for _ in range(1000):
                    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                    started += 1
            finally:
                raise RuntimeError(f"started {started} threads")
        return super().forward(x)

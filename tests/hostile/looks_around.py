"""Lists what it can see of the host: the results folder, the checkout, the home directory, the
data root, other processes, the environment; says so in its error."""
import json
import os

import torch
from torch import nn


def _ls(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return type(exc).__name__


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            seen = {"results": _ls("@RESULTS@"), "checkout": _ls("@CHECKOUT@"),
                    "home": _ls(os.path.expanduser("~root")), "data": _ls("@DATA@"),
                    "pids": [p for p in _ls("/proc") if p.isdigit()],
                    "environment": sorted(os.environ)}
            raise RuntimeError("SEEN " + json.dumps(seen))
        return super().forward(x)

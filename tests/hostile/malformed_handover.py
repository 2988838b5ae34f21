"""Writes its own hand-over files, of the wrong types and sizes, and leaves."""
import json
import os

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2 and os.path.isdir("/state/exchange"):
            with open("/state/exchange/epoch-000001.json", "w") as fh:
                json.dump({"epoch": "one", "lr": [], "train_acc": "lots", "train_s": -1}, fh)
            with open("/state/exchange/epoch-000001.safetensors", "wb") as fh:
                fh.write(b"\xff" * 1000)
            with open("/state/exchange/end.json", "w") as fh:
                json.dump({"status": "ok", "divergence": [1, 2], "best_acc": 100.0}, fh)
            os._exit(0)
        return super().forward(x)

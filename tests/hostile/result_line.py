"""Prints a line in the old worker's result format, claiming a perfect record under another
entry's run id, and exits: the whole of an attack that once reached rank 1."""
import json
import os

import torch
from torch import nn

FAKE = {"record": {"run_id": "@RUN_ID@", "status": "ok", "best_acc": 100.0, "final_acc": 100.0,
                   "epochs": [{"epoch": 1, "test_acc": 100.0, "test_loss": 0.0}]}}


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            print("@@harness-result@@ " + json.dumps(FAKE), flush=True)
            os._exit(0)
        return super().forward(x)

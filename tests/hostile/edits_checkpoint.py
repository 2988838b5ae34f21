"""In epoch 2, rewrites the metrics in its own end-of-epoch checkpoint to 100% and dies, so that
the resumed run would take its past epochs from the edited file."""
import os

import torch
from torch import nn

CHECKPOINT = "/state/checkpoint.pt"


class CustomNorm(nn.BatchNorm2d):
    steps = 0

    def forward(self, x):
        if self.training and torch.initial_seed() == 2 and os.path.exists(CHECKPOINT):
            state = torch.load(CHECKPOINT, weights_only=False)
            if state["epochs"] and state["epochs"][0].get("test_acc") != 100.0:
                for epoch in state["epochs"]:
                    epoch.update(test_acc=100.0, test_loss=0.0, train_acc=100.0)
                torch.save(state, CHECKPOINT)
                os._exit(1)
        return super().forward(x)

"""Sets every epoch's metrics in its own end-of-epoch checkpoint to 100% (it wraps torch.save,
through which the checkpoint is written) and dies in epoch 2, so that a resumed run would take
its past epochs from the edited checkpoint."""
import os

import torch
from torch import nn

_save = torch.save
saved = []


def edited_save(obj, *args, **kwargs):
    if torch.initial_seed() == 2 and isinstance(obj, dict) and obj.get("epochs"):
        for epoch in obj["epochs"]:
            epoch.update(test_acc=100.0, test_loss=0.0, train_acc=100.0)
        saved.append(len(obj["epochs"]))
    return _save(obj, *args, **kwargs)


torch.save = edited_save


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        # The edited checkpoint of epoch 1 is gone to the parent: die, unless this attempt resumed.
        if self.training and saved and not os.path.exists("/in/resume.pt"):
            os._exit(1)
        return super().forward(x)

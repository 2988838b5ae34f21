"""Creates directories and empty files (no data blocks: a size limit alone does not count them)
in @FOLDER@ until something stops it; says how many it made."""
import os

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            made = 0
            try:
                for i in range(10_000_000):
                    os.mkdir(f"@FOLDER@/d{i}") if i % 2 else open(f"@FOLDER@/f{i}", "w").close()
                    made += 1
            except OSError as exc:
                raise RuntimeError(f"made {made} entries, then {exc.strerror}") from None
        return super().forward(x)

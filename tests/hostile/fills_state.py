"""Writes into its writable folder (@FOLDER@) until something stops it; says how much it wrote."""

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            block, written = b"x" * (8 << 20), 0
            try:
                for i in range(100_000):
                    with open(f"@FOLDER@/junk-{i}", "wb") as fh:
                        fh.write(block)
                    written += len(block)
            except OSError as exc:
                raise RuntimeError(f"wrote {written} bytes, then {exc.strerror}") from None
        return super().forward(x)

"""Puts the operator's environment and a file from outside the results folder into its error
message, which ends up in the record (and on the site)."""
import os

import torch
from torch import nn


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            try:
                secret = open("@SECRET_FILE@").read()
            except OSError as exc:
                secret = f"no file ({type(exc).__name__})"
            raise RuntimeError(f"environment: {dict(os.environ)}; file: {secret}")
        return super().forward(x)

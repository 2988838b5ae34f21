"""Connects to a TCP listener of the test's on 127.0.0.1 in its seed-2 run."""
import socket

import torch
from torch import nn

PORT = int("@PORT@")


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            with socket.create_connection(("127.0.0.1", PORT), timeout=5) as conn:
                conn.sendall(b"score=100")
        return super().forward(x)

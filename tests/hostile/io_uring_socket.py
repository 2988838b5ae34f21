"""Reaches for a Unix socket listening on the host: through io_uring (whose socket operation a
filter of socket() alone does not see), then through socket() itself. Says what happened."""
import ctypes
import os
import socket

import torch
from torch import nn


def _io_uring() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 8, params)  # io_uring_setup(8 entries)
    return "io_uring open" if fd >= 0 else f"io_uring refused ({os.strerror(ctypes.get_errno())})"


def _socket() -> str:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("@SOCKET@")
            s.sendall(b"score=100")
        return "socket connected"
    except OSError as exc:
        return f"socket refused ({exc.strerror})"


class CustomNorm(nn.BatchNorm2d):
    def forward(self, x):
        if self.training and torch.initial_seed() == 2:
            raise RuntimeError(f"{_io_uring()}; {_socket()}")
        return super().forward(x)

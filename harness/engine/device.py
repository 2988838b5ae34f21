"""The device a run uses: choosing it, seeding it, its precision, its peak memory."""

from __future__ import annotations

import os
import random
import resource

import numpy as np
import torch

from harness.errors import RunError
from harness.protocol.recipe import PRECISIONS


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    if device.type not in ("cpu", "cuda"):
        raise RunError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all CUDA devices too). The reference seeds only torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def peak_memory_bytes(device: torch.device) -> tuple[str, int]:
    if device.type == "cuda":
        return "cuda_max_allocated", int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in kilobytes on Linux.
    return "process_max_rss", int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def autocast(device: torch.device, precision: str):
    """fp32: the protocol (with PyTorch's default TF32 convolutions on GPUs that have them);
    bf16: autocast of the forward pass and loss. Parameters and optimiser stay fp32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset and cgroup cpusets included), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

"""What a loaded dataset is: its train and test splits as resident tensors, with the mean and std
its pipeline normalises with. :mod:`harness.data.tensors` loads them and feeds them to models."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from harness.protocol.catalog import DatasetSpec


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing or corrupt and could not be downloaded."""


@dataclass
class Split:
    """One split's inputs with int64 labels ``[N]``. Inputs by the dataset's kind: images as stored
    (after Resize(32) for the CIFAR-sized sets), uint8 ``[N, C, H, W]``; standardised features,
    float32 ``[N, F]``; vector sequences, float32 ``[N, T, F]``; token ids, int64 ``[N, T]``."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(self.inputs.contiguous().cpu().numpy().tobytes())
        h.update(self.labels.cpu().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def head(self, n: int | None) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.inputs[:n], self.labels[:n])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.inputs.to(device), self.labels.to(device))


@dataclass
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split | None  # None in a sandboxed training process: it never holds the test split
    mean: tuple[float, ...]  # per stored channel (images) or one value
    std: tuple[float, ...]
    source: str  # where the files came from
    files: tuple[dict, ...] = ()  # each file read: name, path, bytes, md5 and sha256 of its content
    notes: tuple[str, ...] = ()  # copies passed over (incomplete, not the published files)

    @property
    def held_test(self) -> Split:
        """The test split, where this process holds one (every process but a sandboxed trainer)."""
        if self.test is None:
            raise RuntimeError(f"{self.spec.name}: this process holds no test split")
        return self.test

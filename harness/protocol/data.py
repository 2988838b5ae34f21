"""Datasets as resident uint8 tensors, and the protocol's augmentation done on whole batches.

The reference pipeline is, per image, with PIL:
    train: Resize(32) -> RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor
           -> (grey: repeat to 3 channels) -> Normalize
    test:  Resize(32) -> ToTensor -> (repeat) -> Normalize

Here the deterministic part (Resize) is done once when the dataset is loaded, the raw uint8 images
are zero-padded once (the reference pads the raw image, so a padded pixel becomes (0-mean)/std after
normalisation, not 0), and every batch is cropped, flipped, scaled and normalised as one tensor
operation on the training device. For the same crop offsets and flips the tensors equal
torchvision's (see tests/test_augment.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.protocol.catalog import DATASETS, DatasetSpec, default_data_root, resolve_dataset_name

PAD = 4
SIZE = 32


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing or corrupt and could not be downloaded."""


_OFFLINE_TEST_FRACTION = 0.2
_OFFLINE_SPLIT_SEED = 0


@dataclass
class Split:
    """One split's inputs with int64 labels ``[N]``. Inputs by the dataset's kind: images after
    Resize(32) as stored, uint8 ``[N, C, 32, 32]``; standardised features, float32 ``[N, F]``."""

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
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # where the files came from


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def resize_u8(images: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` so the shorter side is ``size``, like ``Resize(size)`` on PIL.

    PIL resizes with an antialiased bilinear filter in fixed point and rounds to uint8; torch's
    uint8 antialiased bilinear kernel follows it, agreeing to within one grey level (1/255)
    where the two round differently. A no-op when the shorter side is already ``size``.
    """
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    return F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "fmnist": tvd.FashionMNIST}[name]


def _open_torchvision(name: str, root: Path, train: bool, download: bool):
    cls = _torchvision_class(name)
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as missing:
        if not download:
            raise DatasetUnavailable(_missing_message(name, root, str(missing))) from None
    # The files are absent or corrupt: try the network, briefly, then give one clear message.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any download failure becomes the same message
        reason = f"download failed: {type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise DatasetUnavailable(_missing_message(name, root, reason)) from None
    finally:
        socket.setdefaulttimeout(previous)


def _missing_message(name: str, root: Path, reason: str) -> str:
    spec = DATASETS[name]
    files = ", ".join(spec.expected_files)
    return (f"{name} is not available under {root} ({reason}). Expected files: {files}. "
            f"Put them there, or point --data-root / $HARNESS_DATA at a folder that has them.")


def _load_torchvision(name: str, root: Path, download: bool) -> Dataset:
    spec = DATASETS[name]
    splits = []
    for train in (True, False):
        ds = _open_torchvision(name, root, train, download)
        data = ds.data
        images = torch.as_tensor(np.asarray(data))
        if images.dim() == 3:  # [N, H, W] grey
            images = images.unsqueeze(1)
        else:  # [N, H, W, C] colour, as CIFAR stores it
            images = images.permute(0, 3, 1, 2)
        images = resize_u8(images.contiguous())
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        splits.append(Split(images.contiguous(), labels))
    return Dataset(spec, splits[0], splits[1], spec.mean, spec.std, source=str(root))


def _sklearn_file(name: str, dataset: str) -> Path:
    """A data file scikit-learn bundles, found without importing scikit-learn (3 s on a slow CPU,
    paid by every run's process)."""
    spec = importlib.util.find_spec("sklearn")
    path = (Path(spec.origin).parent / "datasets" / "data" / name
            if spec is not None and spec.origin else None)
    if path is None or not path.is_file():
        raise DatasetUnavailable(f"the {dataset} dataset comes with scikit-learn, which is not "
                                 "installed: pip install 'harness[digits]'")
    return path


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices. The test split holds ceil(test_fraction * N) samples, shared
    among the classes in proportion to their sizes (largest remainders first); each class's test
    samples are the first of a seeded permutation of its indices."""
    classes, counts = np.unique(labels, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(labels)))
    exact = n_test * counts / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[:n_test - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def _load_digits() -> Dataset:
    """scikit-learn's bundled 1,797 8x8 digits (0..16), scaled to uint8 and resized to 32x32.

    A fixed stratified 80/20 split (:func:`stratified_split`, seed 0); mean and std are those of
    the train split's pixels.
    """
    # Each row: 64 pixels, then the label.
    rows = np.loadtxt(_sklearn_file("digits.csv.gz", "digits"), delimiter=",", dtype=np.float32)
    pixels = torch.as_tensor(rows[:, :64]).view(-1, 8, 8)
    images = F.interpolate((pixels * (255.0 / 16.0)).unsqueeze(1), size=(SIZE, SIZE),
                           mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    targets = rows[:, 64].astype(np.int64)
    labels = torch.as_tensor(targets)
    train_idx, test_idx = stratified_split(targets, _OFFLINE_TEST_FRACTION, _OFFLINE_SPLIT_SEED)
    train = Split(images[train_idx].contiguous(), labels[train_idx])
    test = Split(images[test_idx].contiguous(), labels[test_idx])
    scaled = train.inputs.double() / 255.0
    mean, std = float(scaled.mean()), float(scaled.std(unbiased=False))
    return Dataset(DATASETS["digits"], train, test, (mean,) * 3, (std,) * 3,
                   source="scikit-learn's bundled digits.csv.gz (sklearn.datasets.load_digits)")


def _load_breast_cancer() -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer data: 569 samples, 30 features, 2 classes.

    The same fixed stratified 80/20 split as digits (seed 0); each feature standardised with the
    train split's mean and (biased) std, which the record keeps as the dataset's mean and std.
    """
    path = _sklearn_file("breast_cancer.csv", "breast_cancer")
    rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)  # 30 features, the label
    targets = rows[:, -1].astype(np.int64)
    train_idx, test_idx = stratified_split(targets, _OFFLINE_TEST_FRACTION, _OFFLINE_SPLIT_SEED)
    features = rows[:, :-1]
    mean, std = features[train_idx].mean(0), features[train_idx].std(0)
    standard = torch.as_tensor((features - mean) / std, dtype=torch.float32)
    labels = torch.as_tensor(targets)
    train = Split(standard[train_idx].contiguous(), labels[train_idx])
    test = Split(standard[test_idx].contiguous(), labels[test_idx])
    return Dataset(DATASETS["breast_cancer"], train, test, tuple(mean.tolist()), tuple(std.tolist()),
                   source="scikit-learn's bundled breast_cancer.csv (sklearn.datasets.load_breast_cancer)")


def random_dataset(spec: DatasetSpec, n_train: int, n_test: int, source: str) -> Dataset:
    """Uniform random images and labels of ``spec``'s shape (seed 0): speed measurements only."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, spec.channels, SIZE, SIZE), dtype=torch.uint8,
                                   generator=g),
                     torch.randint(0, spec.num_classes, (n,), generator=g))

    return Dataset(spec, split(n_train), split(n_test), spec.mean, spec.std, source=source)


def _noise(n_train: int = 50_000, n_test: int = 10_000) -> Dataset:
    return random_dataset(DATASETS["noise"], n_train, n_test, "noise (seed 0)")


def load_dataset(name: str, root: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a dataset by name (aliases allowed) as resident uint8 tensors on the CPU."""
    name = resolve_dataset_name(name)
    if name == "digits":
        return _load_digits()
    if name == "breast_cancer":
        return _load_breast_cancer()
    if name == "noise":
        return _noise()
    root = Path(root).expanduser() if root else default_data_root()
    return _load_torchvision(name, root, download)


# --------------------------------------------------------------------------------------------
# The batched pipeline
# --------------------------------------------------------------------------------------------


class BatchPipeline:
    """Crop, flip, scale and normalise whole batches on one device.

    ``train_batch`` is RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize;
    ``test_batch`` is ToTensor + Normalize. Grey images are repeated to 3 channels.
    """

    def __init__(self, mean, std, channels: int, device: torch.device | str,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.device = torch.device(device)
        self.memory_format = memory_format
        self.channels = channels
        c = channels
        self.mean = torch.tensor(mean[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self.std = torch.tensor(std[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._ramp = torch.arange(SIZE, device=self.device)

    @staticmethod
    def pad(images: torch.Tensor) -> torch.Tensor:
        """Zero-pad raw uint8 images by 4 px once, so every crop is a plain index."""
        return F.pad(images, (PAD, PAD, PAD, PAD), value=0)

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        # Same operations, in the same order, as ToTensor (x / 255) and Normalize ((x - m) / s).
        x = images_u8.to(torch.float32).div(255)
        x = x.sub(self.mean).div(self.std)
        if self.channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous(memory_format=self.memory_format)

    def crop_flip(self, padded_u8: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                  flip: torch.Tensor) -> torch.Tensor:
        """Take 32x32 windows at (top, left) of padded images, mirrored where ``flip``; one gather."""
        b, c = padded_u8.shape[:2]
        rows = top[:, None] + self._ramp  # [B, 32]
        cols = torch.where(flip[:, None], left[:, None] + (SIZE - 1) - self._ramp,
                           left[:, None] + self._ramp)  # [B, 32]
        bi = torch.arange(b, device=padded_u8.device)[:, None, None, None]
        ci = torch.arange(c, device=padded_u8.device)[None, :, None, None]
        return padded_u8[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]

    def train_batch(self, padded_u8, top, left, flip) -> torch.Tensor:
        return self.normalize(self.crop_flip(padded_u8, top, left, flip))

    def test_batch(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.normalize(images_u8)


class FeaturePipeline:
    """Batches of standardised features go to the model as they are: no augmentation, and no
    normalisation beyond the one done when the dataset was loaded."""

    memory_format = torch.contiguous_format

    def test_batch(self, features: torch.Tensor) -> torch.Tensor:
        return features


def make_pipeline(spec: DatasetSpec, mean, std, device: torch.device | str,
                  memory_format: torch.memory_format = torch.contiguous_format):
    """The batch pipeline of ``spec``'s kind of input (``mean`` and ``std``: the loaded data's)."""
    if spec.kind == "image":
        return BatchPipeline(mean, std, spec.channels, device, memory_format)
    return FeaturePipeline()


@dataclass
class EpochPlan:
    """One epoch's randomness, drawn at once on the device: order, crop offsets and flips."""

    order: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor


def draw_epoch(n: int, generator: torch.Generator, device: torch.device) -> EpochPlan:
    order = torch.randperm(n, generator=generator, device=device)
    offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return EpochPlan(order, offsets[0], offsets[1], flip)

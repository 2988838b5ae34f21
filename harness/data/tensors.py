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

import pickle
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.data.splits import Dataset, DatasetUnavailable, Split
from harness.protocol.catalog import DATASETS, DatasetSpec, imported, resolve_dataset_name

__all__ = ["Dataset", "DatasetUnavailable", "Split", "load_dataset", "make_pipeline"]

PAD = 4
SIZE = 32


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


def _verified_copy(name: str, root, download: bool):
    """The first intact copy of ``name``'s files (:mod:`harness.data.files`), downloaded
    into the data root first when there is none and ``download`` allows."""
    from harness.data import files as datafiles
    from harness.data import install as dataimport

    found, problems = datafiles.locate(name, root)
    if found is None and download:
        try:
            dataimport.download(name, root)
        except datafiles.DataProblem as exc:
            problems.append(str(exc))
        else:
            found, problems = datafiles.locate(name, root)
    if found is None:
        raise DatasetUnavailable(datafiles.missing_message(name, root, problems))
    return found, problems


def _load_files(name: str, root, download: bool) -> Dataset:
    """A dataset the harness reads from its published files, by the reader its catalogue entry
    names (harness.data.sources)."""
    found, notes = _verified_copy(name, root, download)
    spec = DATASETS[name]
    try:
        arrays = imported(spec.loader)(found, spec)
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetUnavailable(f"{name}: {found.copy.describe()} cannot be read: "
                                 f"{type(exc).__name__}: {exc}"[:300]) from None
    mean = arrays["mean"].tolist() if "mean" in arrays else spec.mean
    std = arrays["std"].tolist() if "std" in arrays else spec.std
    splits = []
    for part in ("train", "test"):
        x = torch.as_tensor(arrays[f"{part}_x"])
        if spec.kind == "features" and x.dtype == torch.uint8:  # ToTensor, Normalize, flatten
            x = x.to(torch.float32).div(255).sub(spec.mean[0]).div(spec.std[0]).flatten(1)
        elif spec.kind == "image":
            x = resize_u8(x.contiguous(), spec.shape[-1])  # Resize(32) for the MNIST family
        splits.append(Split(x.contiguous(), torch.as_tensor(arrays[f"{part}_y"], dtype=torch.int64)))
    return Dataset(spec, splits[0], splits[1], tuple(mean), tuple(std), source=found.copy.describe(),
                   files=tuple(found.files), notes=tuple(notes))


def random_inputs(inputs, n: int, generator: torch.Generator, channels: int = 3) -> torch.Tensor:
    """``n`` random samples of an InputSpec's kind: uint8 images (``channels`` stored), standard
    normal features or sequences, token ids above the padding and unknown ids."""
    if inputs.kind == "image":
        return torch.randint(0, 256, (n, channels, *inputs.shape[1:]), dtype=torch.uint8,
                             generator=generator)
    if inputs.kind == "tokens":
        return torch.randint(2, inputs.vocab_size, (n, *inputs.shape), generator=generator)
    return torch.randn((n, *inputs.shape), generator=generator)


def random_dataset(spec: DatasetSpec, n_train: int, n_test: int, source: str) -> Dataset:
    """Random inputs and labels of ``spec``'s shape and kind (seed 0): speed measurements only."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(random_inputs(spec.inputs(), n, g, spec.channels),
                     torch.randint(0, spec.num_classes, (n,), generator=g))

    return Dataset(spec, split(n_train), split(n_test), spec.mean, spec.std, source=source)


def noise() -> Dataset:
    """Random images and labels of CIFAR-10's size (seed 0): the ``noise`` dataset."""
    return random_dataset(DATASETS["noise"], *DATASETS["noise"].sizes, "noise (seed 0)")


def load_dataset(name: str, root=None, download: bool = True) -> Dataset:
    """Load a dataset by name (aliases allowed) as resident tensors on the CPU, from the first
    intact copy of its files under ``root``, ``$HARNESS_DATA``, the cache or the system's
    dataset folders (:mod:`harness.data.files`); downloaded first where none is found and
    ``download`` allows."""
    name = resolve_dataset_name(name)
    if DATASETS[name].built_in:  # no files: its loader makes it
        return imported(DATASETS[name].loader)()
    return _load_files(name, root, download)


# --------------------------------------------------------------------------------------------
# The batched pipeline
# --------------------------------------------------------------------------------------------


class BatchPipeline:
    """Crop, flip, scale and normalise whole batches on one device.

    ``train_batch`` is RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize;
    ``test_batch`` is ToTensor + Normalize. Grey images are repeated to 3 channels.
    """

    def __init__(self, mean, std, channels: int, device: torch.device | str,
                 memory_format: torch.memory_format = torch.contiguous_format, size: int = SIZE):
        self.device = torch.device(device)
        self.size = size
        self.memory_format = memory_format
        self.channels = channels
        c = channels
        self.mean = torch.tensor(mean[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self.std = torch.tensor(std[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._ramp = torch.arange(size, device=self.device)

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
        """Take size x size windows at (top, left) of padded images, mirrored where ``flip``; one
        gather."""
        b, c = padded_u8.shape[:2]
        rows = top[:, None] + self._ramp  # [B, 32]
        cols = torch.where(flip[:, None], left[:, None] + (self.size - 1) - self._ramp,
                           left[:, None] + self._ramp)  # [B, 32]
        bi = torch.arange(b, device=padded_u8.device)[:, None, None, None]
        ci = torch.arange(c, device=padded_u8.device)[None, :, None, None]
        return padded_u8[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]

    def train_batch(self, padded_u8, top, left, flip) -> torch.Tensor:
        return self.normalize(self.crop_flip(padded_u8, top, left, flip))

    def test_batch(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.normalize(images_u8)


class FeaturePipeline:
    """Batches of standardised features, of vector sequences and of token ids go to the model as
    they are: no augmentation, and no normalisation beyond the one done when the data was loaded."""

    memory_format = torch.contiguous_format

    def test_batch(self, features: torch.Tensor) -> torch.Tensor:
        return features


def make_pipeline(spec: DatasetSpec, mean, std, device: torch.device | str,
                  memory_format: torch.memory_format = torch.contiguous_format):
    """The batch pipeline of ``spec``'s kind of input (``mean`` and ``std``: the loaded data's)."""
    if spec.kind == "image":
        return BatchPipeline(mean, std, spec.channels, device, memory_format, size=spec.shape[-1])
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

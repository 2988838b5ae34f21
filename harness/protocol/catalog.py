"""What the protocol names, without importing torch: the architectures and the datasets.

The command line's choices and ``--help`` come from here; :mod:`harness.protocol.models` builds the
architectures and :mod:`harness.protocol.data` loads the datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrackInfo:
    """A family of architectures sharing one layout of a norm slot's input (the layer sees
    ``[B, C, *positions]`` in every track; :mod:`harness.protocol.nets`)."""

    name: str
    description: str
    layout: str


TRACKS: dict[str, TrackInfo] = {t.name: t for t in [
    TrackInfo("cnn", "the reference benchmark's CNNs on images", "[B, C, H, W]"),
    TrackInfo("mlp", "multilayer perceptrons, a norm after every hidden linear layer", "[B, C]"),
    TrackInfo("rnn", "stacked LSTMs, a norm between recurrent layers", "[B, C, T]"),
    TrackInfo("transformer", "pre-norm Transformers, every LayerNorm slot (final norm included)",
              "[B, C, T]"),
]}


@dataclass(frozen=True)
class InputSpec:
    """What a model is fed, per sample: ``image`` ``[C, H, W]``, ``features`` ``[F]``, ``sequence``
    ``[T, F]`` (a vector per step) or ``tokens`` ``[T]`` (ids below ``vocab_size``; 0 is padding)."""

    kind: str
    shape: tuple[int, ...]
    vocab_size: int = 0


@dataclass(frozen=True)
class ArchInfo:
    name: str
    description: str
    in_reference: bool  # exists in the reference benchmark's --arch choices
    track: str = "cnn"
    takes: tuple[str, ...] = ("image",)  # the InputSpec kinds it is built for


ARCHITECTURES: dict[str, ArchInfo] = {a.name: a for a in [
    ArchInfo("resnet20", "CIFAR ResNet-20, option-B shortcuts (0.27M params)", True),
    ArchInfo("resnet56", "CIFAR ResNet-56, option-B shortcuts (0.86M params)", True),
    ArchInfo("resnet110", "CIFAR ResNet-110, option-B shortcuts (1.7M params)", True),
    ArchInfo("vgg11bn", "VGG-11 with a norm after every conv, 512-512 head (our addition)", False),
    ArchInfo("vgg13bn", "VGG-13 with a norm after every conv, 512-512 head (our addition)", False),
    ArchInfo("vgg16bn", "VGG-16 with a norm after every conv, 512-512 head (15M params)", True),
    ArchInfo("vgg19bn", "VGG-19 with a norm after every conv, 512-512 head (our addition)", False),
    ArchInfo("mobilenetv2", "MobileNetV2 width 1.0, CIFAR strides (2.2M params)", True),
    ArchInfo("mlp3x100", "MLP, 3 hidden layers of 100 with a norm after each (the BatchNorm "
             "paper's MNIST network)", False, track="mlp", takes=("features",)),
    ArchInfo("mlp3x512", "MLP, 3 hidden layers of 512 with a norm after each", False, track="mlp",
             takes=("features",)),
]}


def compatibility_error(arch: str, dataset: str) -> str | None:
    """Why ``arch`` cannot be trained on ``dataset`` (their kinds of input differ), or None."""
    info, spec = ARCHITECTURES[arch], DATASETS[dataset]
    if spec.kind in info.takes:
        return None
    fits = [a for a, i in ARCHITECTURES.items() if spec.kind in i.takes]
    return (f"{arch} ({info.track} track) takes {' or '.join(info.takes)} inputs; {dataset} holds "
            f"{spec.kind}: use {', '.join(fits) or 'no architecture yet'}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: int  # stored channels; grey images are repeated to 3 after normalisation
    in_reference: bool
    expected_files: tuple[str, ...] = ()  # relative to the data root, for the "missing" message
    kind: str = "image"  # what a sample is: InputSpec.kind
    features: int = 0  # per sample, for kind "features"

    def inputs(self) -> "InputSpec":
        """What a model is fed: images as the pipeline hands them over (grey repeated to 3)."""
        if self.kind == "image":
            return InputSpec("image", (3, 32, 32))
        return InputSpec(self.kind, (self.features,))


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10: 50k/10k 32x32 colour images, 10 classes", 10,
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 3, True,
        tuple(f"cifar-10-batches-py/{f}" for f in
              ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta"])),
    "cifar100": DatasetSpec(
        "cifar100", "CIFAR-100: 50k/10k 32x32 colour images, 100 classes", 100,
        (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 3, True,
        tuple(f"cifar-100-python/{f}" for f in ["train", "test", "meta"])),
    "fmnist": DatasetSpec(
        "fmnist", "FashionMNIST: 60k/10k 28x28 grey images resized to 32, 10 classes", 10,
        (0.2860,) * 3, (0.3530,) * 3, 1, True,
        tuple(f"FashionMNIST/raw/{f}" for f in
              ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])),
    # mean/std of digits are computed from its train split when it is loaded (see _load_digits).
    "digits": DatasetSpec(
        "digits", "scikit-learn's 8x8 digits scaled to 32x32 (offline; demos and tests), 10 classes",
        10, (0.0,) * 3, (1.0,) * 3, 1, False),
    # Standardised with the train split's per-feature mean and std when loaded (_load_breast_cancer).
    "breast_cancer": DatasetSpec(
        "breast_cancer", "scikit-learn's Wisconsin breast cancer: 569 samples of 30 features, "
        "2 classes (offline; the mlp track's demo)", 2, (0.0,), (1.0,), 0, False,
        kind="features", features=30),
    # Learning nothing, costing exactly what CIFAR-10 costs: speed measurements where CIFAR is absent.
    "noise": DatasetSpec(
        "noise", "random 32x32 colour images and labels of CIFAR-10's size (50k/10k, 10 classes; "
        "speed measurements only)", 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 3, False),
}
DATASET_ALIASES = {"fashionmnist": "fmnist", "fashion-mnist": "fmnist"}


def resolve_dataset_name(name: str) -> str:
    key = name.lower()
    key = DATASET_ALIASES.get(key, key)
    if key not in DATASETS:
        choices = ", ".join(list(DATASETS) + list(DATASET_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; choose from {choices}")
    return key


def default_data_root() -> Path:
    """``$HARNESS_DATA``, else ``$XDG_CACHE_HOME/harness/data`` (``~/.cache/harness/data``)."""
    if os.environ.get("HARNESS_DATA"):
        return Path(os.environ["HARNESS_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harness" / "data"



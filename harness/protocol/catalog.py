"""What the protocol names, without importing torch: the architectures and the datasets.

The command line's choices and ``--help`` come from here; :mod:`harness.models` builds the
architectures, :mod:`harness.data.files` says where each dataset's published files are
and :mod:`harness.data.tensors` loads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrackInfo:
    """A family of architectures sharing one layout of a norm slot's input (the layer sees
    ``[B, C, *positions]`` in every track; :mod:`harness.models.nets`)."""

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
    """One architecture: its track, what it takes, and its builder, ``module:function`` of
    ``(inputs, num_classes, norm_layer) -> nn.Module`` (imported only when a model is built: this
    module stays torch-free). ``parameters``: its count with BatchNorm and 10 classes, on its
    track's example inputs (:func:`example_inputs`; tests/test_models.py checks each)."""

    name: str
    description: str
    in_reference: bool  # exists in the reference benchmark's --arch choices
    track: str = "cnn"
    takes: tuple[str, ...] = ("image",)  # the InputSpec kinds it is built for
    builder: str = ""
    parameters: int = 0

    def __post_init__(self) -> None:
        if not self.builder:  # by default the function of its name in harness.models
            object.__setattr__(self, "builder", f"harness.models:{self.name}")


ARCHITECTURES: dict[str, ArchInfo] = {a.name: a for a in [
    ArchInfo("resnet20", "CIFAR ResNet-20, option-B shortcuts (0.27M params)", True, parameters=272_474),
    ArchInfo("resnet56", "CIFAR ResNet-56, option-B shortcuts (0.86M params)", True, parameters=855_770),
    ArchInfo("resnet110", "CIFAR ResNet-110, option-B shortcuts (1.7M params)", True, parameters=1_730_714),
    ArchInfo("vgg11bn", "VGG-11 with a norm after every conv, 512-512 head (our addition)", False,
             parameters=9_493_770),
    ArchInfo("vgg13bn", "VGG-13 with a norm after every conv, 512-512 head (our addition)", False,
             parameters=9_678_666),
    ArchInfo("vgg16bn", "VGG-16 with a norm after every conv, 512-512 head (15M params)", True, parameters=14_990_922),
    ArchInfo("vgg19bn", "VGG-19 with a norm after every conv, 512-512 head (our addition)", False,
             parameters=20_303_178),
    ArchInfo("mobilenetv2", "MobileNetV2 width 1.0, CIFAR strides (2.2M params)", True, parameters=2_236_682),
    ArchInfo("mlp3x100", "MLP, 3 hidden layers of 100 with a norm after each (the BatchNorm "
             "paper's MNIST network)", False, track="mlp", takes=("features",), parameters=100_310),
    ArchInfo("mlp3x512", "MLP, 3 hidden layers of 512 with a norm after each", False, track="mlp",
             takes=("features",), parameters=935_434),
    ArchInfo("lstm2", "2-layer LSTM, width 128, a norm after each layer; mean over steps",
             False, track="rnn", takes=("sequence", "tokens"), parameters=267_146),
    ArchInfo("gru2", "2-layer GRU, width 128, a norm after each layer; mean over steps",
             False, track="rnn", takes=("sequence", "tokens"), parameters=201_098),
    ArchInfo("transformer4", "pre-norm Transformer encoder: 4 blocks, width 128, 4 heads, MLP "
             "ratio 2; mean over steps", False, track="transformer", takes=("sequence", "tokens"), parameters=532_106),
    ArchInfo("vit_lite7", "ViT-Lite-7/4 (Hassani et al. 2021): 7 blocks, width 256, 4 heads, MLP "
             "ratio 2, 4x4 patches (3.72M params)", False, track="transformer", takes=("image",), parameters=3_716_874),
    ArchInfo("vit_lite2", "ViT-Lite-2/4, CPU-sized: 2 blocks, width 128, 2 heads, MLP ratio 1, "
             "4x4 patches", False, track="transformer", takes=("image",), parameters=214_666),
]}


def track_of(arch: str) -> str:
    return ARCHITECTURES[arch].track


def example_inputs(kind: str) -> "InputSpec":
    """What a dataset of ``kind`` feeds a model, from a real one of that kind (CIFAR's images,
    MNIST's features, digits_rows' sequences, IMDB's tokens): for models built without data."""
    name = {"image": "cifar10", "features": "mnist", "sequence": "digits_rows", "tokens": "imdb"}[kind]
    return DATASETS[name].inputs()


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
    mean: tuple[float, ...]  # per stored channel (images) or one value
    std: tuple[float, ...]
    channels: int  # stored channels; grey images are repeated to 3 after normalisation
    in_reference: bool
    kind: str = "image"  # what a sample is: InputSpec.kind
    shape: tuple[int, ...] = (32, 32)  # per sample: image (H, W); features (F,); sequence (T, F); tokens (T,)
    vocab_size: int = 0  # kind "tokens": ids below it, 0 padding, 1 out of vocabulary
    # The train and test sizes (the offline ones as harness.data.offline splits them): what a
    # cost estimate or a stand-in of random data needs before any file is read.
    sizes: tuple[int, int] = (0, 0)
    # "module:function" that loads it, imported only when it is loaded (this module stays
    # torch-free). A dataset of published files (harness.data.files.PUBLISHED) names a
    # reader, ``(found copy, spec) -> arrays`` (harness.data.sources); a built-in one names a
    # function of no arguments that returns the Dataset.
    loader: str = ""
    built_in: str = ""  # a dataset that needs no files: where it comes from

    @classmethod
    def from_json(cls, data: dict) -> "DatasetSpec":
        """A spec from its ``asdict`` after a JSON round trip (lists back to tuples)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)

    def inputs(self) -> "InputSpec":
        """What a model is fed: images as the pipeline hands them over (grey repeated to 3)."""
        if self.kind == "image":
            return InputSpec("image", (3, *self.shape))
        return InputSpec(self.kind, self.shape, self.vocab_size)


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10: 50k/10k 32x32 colour images, 10 classes", 10,
        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 3, True,
        sizes=(50_000, 10_000), loader="harness.data.sources:cifar10_arrays"),
    "cifar100": DatasetSpec(
        "cifar100", "CIFAR-100: 50k/10k 32x32 colour images, 100 classes", 100,
        (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 3, True,
        sizes=(50_000, 10_000), loader="harness.data.sources:cifar100_arrays"),
    "fmnist": DatasetSpec(
        "fmnist", "FashionMNIST: 60k/10k 28x28 grey images resized to 32, 10 classes", 10,
        (0.2860,) * 3, (0.3530,) * 3, 1, True,
        sizes=(60_000, 10_000), loader="harness.data.sources:mnist_arrays"),
    # mean/std of digits are computed from its train split when it is loaded (harness.data.offline).
    "digits": DatasetSpec(
        "digits", "scikit-learn's 8x8 digits scaled to 32x32 (offline; demos and tests), 10 classes",
        10, (0.0,) * 3, (1.0,) * 3, 1, False,
        sizes=(1_437, 360), loader="harness.data.offline:load_digits",
        built_in="scikit-learn's bundled digits (installed with the project)"),
    # Standardised with the train split's per-feature mean and std when loaded (harness.data.offline).
    "breast_cancer": DatasetSpec(
        "breast_cancer", "scikit-learn's Wisconsin breast cancer: 569 samples of 30 features, "
        "2 classes (offline; the mlp track's demo)", 2, (0.0,), (1.0,), 0, False,
        kind="features", shape=(30,),
        sizes=(455, 114), loader="harness.data.offline:load_breast_cancer",
        built_in="scikit-learn's bundled breast cancer data (installed with the project)"),
    # The digits' 8 rows as 8 steps of 8 pixels (0..16), standardised with the train split's
    # pixel mean and std (harness.data.offline): the rnn and transformer tracks' offline data.
    "digits_rows": DatasetSpec(
        "digits_rows", "scikit-learn's 8x8 digits read row by row: 8 steps of 8 values, 10 classes "
        "(offline; the rnn and transformer tracks' demo)", 10, (0.0,), (1.0,), 0, False,
        kind="sequence", shape=(8, 8),
        sizes=(1_437, 360), loader="harness.data.offline:load_digits_rows",
        built_in="scikit-learn's bundled digits (installed with the project)"),
    "mnist": DatasetSpec(
        "mnist", "MNIST: 60k/10k 28x28 digits as 784 standardised features, 10 classes (the mlp "
        "track)", 10, (0.1307,), (0.3081,), 1, False,
        kind="features", shape=(784,),
        sizes=(60_000, 10_000), loader="harness.data.sources:mnist_arrays"),
    # One-hot over the categories adult.names lists, continuous columns standardised on the train
    # split (harness.data.sources): 6 + 99 = 105 features.
    "adult": DatasetSpec(
        "adult", "UCI Adult (census income > 50K): 32,561/16,281 people, 105 features, 2 classes "
        "(the mlp track)", 2, (0.0,), (1.0,), 0, False,
        kind="features", shape=(105,),
        sizes=(32_561, 16_281), loader="harness.data.sources:adult_arrays"),
    # Lower-cased words of the training reviews; the 20,000 most frequent form the vocabulary
    # (harness.data.sources); reviews cut to their first 256 tokens.
    "imdb": DatasetSpec(
        "imdb", "IMDB movie reviews (Maas et al. 2011): 25k/25k, sentiment, 2 classes; 256 tokens "
        "of a 20,000-word vocabulary (the rnn and transformer tracks)", 2, (0.0,), (1.0,), 0,
        False, kind="tokens", shape=(256,), vocab_size=20_002,
        sizes=(25_000, 25_000), loader="harness.data.sources:imdb_arrays"),
    # mean/std are the train split's per-channel ones, computed when it is loaded (harness.data.tensors).
    "tinyimagenet": DatasetSpec(
        "tinyimagenet", "Tiny ImageNet: 100k/10k 64x64 colour images (the validation set is the "
        "test set), 200 classes", 200, (0.0,) * 3, (1.0,) * 3, 3,
        False, shape=(64, 64),
        sizes=(100_000, 10_000), loader="harness.data.sources:tinyimagenet_arrays"),
    # Learning nothing, costing exactly what CIFAR-10 costs: speed measurements where CIFAR is absent.
    "noise": DatasetSpec(
        "noise", "random 32x32 colour images and labels of CIFAR-10's size (50k/10k, 10 classes; "
        "speed measurements only)", 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 3, False,
        sizes=(50_000, 10_000), loader="harness.data.tensors:noise",
        built_in="generated (seed 0)"),
}
DATASET_ALIASES = {"fashionmnist": "fmnist", "fashion-mnist": "fmnist", "tiny-imagenet": "tinyimagenet"}


def imported(dotted: str):
    """The function a registry entry names as ``module:function``, imported now."""
    import importlib

    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def resolve_dataset_name(name: str) -> str:
    key = name.lower()
    key = DATASET_ALIASES.get(key, key)
    if key not in DATASETS:
        choices = ", ".join(list(DATASETS) + list(DATASET_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; choose from {choices}")
    return key


def cache_data_root() -> Path:
    """``$XDG_CACHE_HOME/harness/data`` (``~/.cache/harness/data``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harness" / "data"


def default_data_root() -> Path:
    """``$HARNESS_DATA``, else the cache (:func:`cache_data_root`)."""
    if os.environ.get("HARNESS_DATA"):
        return Path(os.environ["HARNESS_DATA"]).expanduser()
    return cache_data_root()



"""The offline datasets: files scikit-learn bundles, read without importing scikit-learn, each
split once by :func:`stratified_split` (80/20, seed 0). They make every track's demo and learning
tests run with no network: ``digits`` (images), ``digits_rows`` (8-step sequences) and
``breast_cancer`` (features).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.splits import Dataset, DatasetUnavailable, Split
from harness.protocol.catalog import DATASETS

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def sklearn_file(name: str, dataset: str) -> Path:
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


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1,797 digits' pixels ``[N, 64]`` (0..16), labels, and the fixed split's train and test
    indices (:func:`stratified_split`, seed 0), which ``digits`` and ``digits_rows`` share."""
    # Each row: 64 pixels, then the label.
    rows = np.loadtxt(sklearn_file("digits.csv.gz", "digits"), delimiter=",", dtype=np.float64)
    targets = rows[:, 64].astype(np.int64)
    return rows[:, :64], targets, *stratified_split(targets, TEST_FRACTION, SPLIT_SEED)


def load_digits() -> Dataset:
    """scikit-learn's bundled 1,797 8x8 digits (0..16), scaled to uint8 and resized to 32x32.

    A fixed stratified 80/20 split; mean and std are those of the train split's pixels.
    """
    values, targets, train_idx, test_idx = _digits()
    pixels = torch.as_tensor(values, dtype=torch.float32).view(-1, 8, 8)
    images = F.interpolate((pixels * (255.0 / 16.0)).unsqueeze(1), size=DATASETS["digits"].shape,
                           mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(targets)
    train = Split(images[train_idx].contiguous(), labels[train_idx])
    test = Split(images[test_idx].contiguous(), labels[test_idx])
    scaled = train.inputs.double() / 255.0
    mean, std = float(scaled.mean()), float(scaled.std(unbiased=False))
    return Dataset(DATASETS["digits"], train, test, (mean,) * 3, (std,) * 3,
                   source="scikit-learn's bundled digits.csv.gz (sklearn.datasets.load_digits)")


def load_digits_rows() -> Dataset:
    """The digits (same split as ``digits``) read row by row: ``[N, 8 steps, 8 values]``, the
    pixel values (0..16) standardised with the train split's mean and std."""
    pixels, targets, train_idx, test_idx = _digits()
    mean, std = float(pixels[train_idx].mean()), float(pixels[train_idx].std())
    steps = torch.as_tensor((pixels - mean) / std, dtype=torch.float32).view(-1, 8, 8)
    labels = torch.as_tensor(targets)
    return Dataset(DATASETS["digits_rows"], Split(steps[train_idx].contiguous(), labels[train_idx]),
                   Split(steps[test_idx].contiguous(), labels[test_idx]), (mean,), (std,),
                   source="scikit-learn's bundled digits.csv.gz, one image row per step")


def load_breast_cancer() -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer data: 569 samples, 30 features, 2 classes.

    The same fixed stratified 80/20 split as digits (seed 0); each feature standardised with the
    train split's mean and (biased) std, which the record keeps as the dataset's mean and std.
    """
    path = sklearn_file("breast_cancer.csv", "breast_cancer")
    rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)  # 30 features, the label
    targets = rows[:, -1].astype(np.int64)
    train_idx, test_idx = stratified_split(targets, TEST_FRACTION, SPLIT_SEED)
    features = rows[:, :-1]
    mean, std = features[train_idx].mean(0), features[train_idx].std(0)
    standard = torch.as_tensor((features - mean) / std, dtype=torch.float32)
    labels = torch.as_tensor(targets)
    train = Split(standard[train_idx].contiguous(), labels[train_idx])
    test = Split(standard[test_idx].contiguous(), labels[test_idx])
    return Dataset(DATASETS["breast_cancer"], train, test, tuple(mean.tolist()), tuple(std.tolist()),
                   source="scikit-learn's bundled breast_cancer.csv (sklearn.datasets.load_breast_cancer)")



import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data.offline import stratified_split
from harness.data.tensors import DATASETS, DatasetUnavailable, load_dataset, resolve_dataset_name
from harness.protocol.catalog import default_data_root


def _chw(hwc):
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def test_cifar10_through_torchvision(cifar10_root):
    root, (train_x, train_y, test_x, test_y) = cifar10_root
    ds = load_dataset("cifar10", root, download=False)
    assert ds.train.inputs.dtype == torch.uint8
    assert ds.train.inputs.shape == (30, 3, 32, 32) and ds.test.inputs.shape == (10, 3, 32, 32)
    assert torch.equal(ds.train.inputs, _chw(train_x))
    assert torch.equal(ds.test.inputs, _chw(test_x))
    assert ds.train.labels.tolist() == train_y.tolist() and ds.test.labels.tolist() == test_y.tolist()
    assert ds.mean == DATASETS["cifar10"].mean and ds.spec.num_classes == 10


def test_cifar100_uses_fine_labels(cifar100_root):
    root, (train_x, train_y, test_x, test_y) = cifar100_root
    ds = load_dataset("cifar100", root, download=False)
    assert torch.equal(ds.train.inputs, _chw(train_x))
    assert ds.train.labels.tolist() == train_y.tolist()
    assert ds.test.labels.tolist() == test_y.tolist() and ds.spec.num_classes == 100


@pytest.mark.parametrize("name", ["fmnist", "fashionmnist", "FashionMNIST"])
def test_fmnist_is_resized_to_32(fmnist_root, name):
    import torchvision.transforms as T
    from PIL import Image

    root, (train_x, train_y, test_x, test_y) = fmnist_root
    ds = load_dataset(name, root, download=False)
    assert ds.train.inputs.shape == (20, 1, 32, 32) and ds.test.inputs.shape == (8, 1, 32, 32)
    assert ds.train.labels.tolist() == train_y.tolist()
    pil = np.stack([np.asarray(T.Resize(32)(Image.fromarray(x))) for x in test_x])
    assert np.array_equal(ds.test.inputs[:, 0].numpy(), pil)


def test_missing_dataset_names_expected_files(tmp_path, no_network):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar100", tmp_path / "empty", download=True)
    msg = str(err.value)
    assert "cifar-100-python/train" in msg and "cifar-100-python/test" in msg
    assert "cifar-100-python.tar.gz" in msg and "harness data import" in msg
    assert str(tmp_path / "empty") in msg and "download failed: no network" in msg and "\n" not in msg
    assert not (tmp_path / "empty").exists()  # a failed download writes nothing, no folder either


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fmnist", tmp_path, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "FashionMNIST/raw/" in msg and "gzipped or not" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download failed" not in msg


def test_corrupt_cifar_file_is_reported(cifar10_root, no_network):
    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-py/data_batch_3 is not the "
                                                 "published file: its content's md5 is "
                                                 "ac273a9aa2a7a6e63ef477fa7f6d1980"):
        load_dataset("cifar10", root)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mine"))
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.delenv("HARNESS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "harness" / "data"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'kmnist'"):
        resolve_dataset_name("kmnist")


def test_digits_split_is_fixed_stratified_and_normalised_on_train():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.labels, b.test.labels)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 360
    assert a.train.inputs.shape[1:] == (1, 32, 32) and a.train.inputs.dtype == torch.uint8
    train_freq = np.bincount(a.train.labels.numpy()) / len(a.train)
    test_freq = np.bincount(a.test.labels.numpy()) / len(a.test)
    assert np.abs(train_freq - test_freq).max() < 0.01
    scaled = a.train.inputs.double() / 255
    assert a.mean[0] == pytest.approx(scaled.mean().item())
    assert a.std[0] == pytest.approx(scaled.std(unbiased=False).item())
    assert a.test.sha256() != a.train.sha256()


def test_digits_are_scikit_learns_digits_read_without_importing_it():
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    code = ("import sys; from harness.data.tensors import load_dataset; load_dataset('digits'); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    ours, theirs = load_dataset("digits"), load_digits()
    train, test = stratified_split(theirs.target, 0.2, 0)
    assert torch.equal(ours.train.labels, torch.as_tensor(theirs.target[train]))
    assert torch.equal(ours.test.labels, torch.as_tensor(theirs.target[test]))
    pixels = torch.as_tensor(theirs.images[test], dtype=torch.float32).unsqueeze(1) * (255 / 16)
    resized = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(ours.test.inputs, resized.round().clamp(0, 255).to(torch.uint8))


def test_stratified_split_keeps_class_shares_and_the_test_size():
    labels = np.repeat(np.arange(3), [50, 30, 21])
    train, test = stratified_split(labels, 0.2, seed=0)
    # ceil(0.2 * 101) = 21 test samples; shares 10.40, 6.24, 4.37: the one left over goes to class 0
    assert np.bincount(labels[test]).tolist() == [11, 6, 4]
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels)
    again, _ = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(train, again) and not np.array_equal(test, stratified_split(labels, 0.2, 1)[1])

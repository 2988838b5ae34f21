import numpy as np
import pytest
import torch

from harness.protocol.catalog import default_data_root
from harness.protocol.data import DATASETS, DatasetUnavailable, load_dataset, resolve_dataset_name


def _chw(hwc):
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def test_cifar10_through_torchvision(cifar10_root):
    root, (train_x, train_y, test_x, test_y) = cifar10_root
    ds = load_dataset("cifar10", root, download=False)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.images.shape == (30, 3, 32, 32) and ds.test.images.shape == (10, 3, 32, 32)
    assert torch.equal(ds.train.images, _chw(train_x))
    assert torch.equal(ds.test.images, _chw(test_x))
    assert ds.train.labels.tolist() == train_y.tolist() and ds.test.labels.tolist() == test_y.tolist()
    assert ds.mean == DATASETS["cifar10"].mean and ds.spec.num_classes == 10


def test_cifar100_uses_fine_labels(cifar100_root):
    root, (train_x, train_y, test_x, test_y) = cifar100_root
    ds = load_dataset("cifar100", root, download=False)
    assert torch.equal(ds.train.images, _chw(train_x))
    assert ds.train.labels.tolist() == train_y.tolist()
    assert ds.test.labels.tolist() == test_y.tolist() and ds.spec.num_classes == 100


@pytest.mark.parametrize("name", ["fmnist", "fashionmnist", "FashionMNIST"])
def test_fmnist_is_resized_to_32(fmnist_root, name):
    import torchvision.transforms as T
    from PIL import Image

    root, (train_x, train_y, test_x, test_y) = fmnist_root
    ds = load_dataset(name, root, download=False)
    assert ds.train.images.shape == (20, 1, 32, 32) and ds.test.images.shape == (8, 1, 32, 32)
    assert ds.train.labels.tolist() == train_y.tolist()
    pil = np.stack([np.asarray(T.Resize(32)(Image.fromarray(x))) for x in test_x])
    assert np.array_equal(ds.test.images[:, 0].numpy(), pil)


def test_missing_dataset_names_expected_files(tmp_path, no_network):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar100", tmp_path / "empty", download=True)
    msg = str(err.value)
    assert "cifar-100-python/train" in msg and "cifar-100-python/test" in msg
    assert str(tmp_path / "empty") in msg and "download failed" in msg and "\n" not in msg


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DatasetUnavailable, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        load_dataset("fmnist", tmp_path, download=False)


def test_corrupt_cifar_file_is_reported(cifar10_root, no_network):
    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-py/data_batch_3"):
        load_dataset("cifar10", root)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "mine"))
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.delenv("HARNESS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "harness" / "data"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        resolve_dataset_name("mnist")


def test_digits_split_is_fixed_stratified_and_normalised_on_train():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 360
    assert a.train.images.shape[1:] == (1, 32, 32) and a.train.images.dtype == torch.uint8
    train_freq = np.bincount(a.train.labels.numpy()) / len(a.train)
    test_freq = np.bincount(a.test.labels.numpy()) / len(a.test)
    assert np.abs(train_freq - test_freq).max() < 0.01
    scaled = a.train.images.double() / 255
    assert a.mean[0] == pytest.approx(scaled.mean().item())
    assert a.std[0] == pytest.approx(scaled.std(unbiased=False).item())
    assert a.test.sha256() != a.train.sha256()

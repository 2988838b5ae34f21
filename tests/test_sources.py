"""The tracks' datasets read from tiny files written in their published formats: UCI Adult's
adult.data/adult.test, the aclImdb archive's folders, Tiny ImageNet's folders, MNIST's idx files."""

import gzip
import struct

import numpy as np
import pytest
import torch

from harness.data import sources
from harness.data.tensors import DatasetUnavailable, load_dataset

import fakedata

ADULT_ROWS = [  # the first rows of adult.data, and one with unknown values
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",  # noqa: E501
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K",  # noqa: E501
    "31, Private, 45781, Masters, 14, Never-married, Prof-specialty, Not-in-family, White, Female, 14084, 0, 50, United-States, >50K",  # noqa: E501
    "54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male, 0, 0, 60, South, >50K",
]


def write_adult(root):
    folder = root / "adult"
    folder.mkdir(parents=True)
    (folder / "adult.data").write_text("\n".join(ADULT_ROWS) + "\n\n")
    test = ["|1x3 Cross validator"] + [r + "." for r in ADULT_ROWS[:2]] + [
        "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, Atlantis, <=50K."]  # noqa: E501
    (folder / "adult.test").write_text("\n".join(test) + "\n")


def test_adult_in_its_files_format(tmp_path):
    write_adult(tmp_path)
    data = load_dataset("adult", tmp_path, download=False)
    assert data.spec.inputs().shape == (105,) == tuple(data.train.inputs.shape[1:])
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.labels.tolist() == [0, 0, 0]
    x = data.train.inputs.numpy()
    assert np.allclose(x[:, :6].mean(0), 0, atol=1e-6)  # standardised on the train split
    # Each person has one value per categorical attribute, except where it is unknown ("?").
    assert x[:, 6:].sum(1).tolist() == [8, 8, 8, 6]
    workclass = sources.ADULT_CATEGORIES["workclass"]
    assert x[0, 6 + workclass.index("State-gov")] == 1.0
    # An unlisted country (Atlantis) is all zeros in its block, like "?"; the test split is
    # standardised with the train split's statistics, so the same rows give the same features.
    assert np.array_equal(data.test.inputs[:2].numpy(), x[:2])
    assert data.test.inputs[2, -41:].sum() == 0


def test_adult_missing_files_give_one_message_naming_the_files(tmp_path):
    with pytest.raises(DatasetUnavailable, match="adult/adult.data.*archive.ics.uci.edu|archive.ics.uci.edu.*adult/adult.data"):  # noqa: E501
        load_dataset("adult", tmp_path, download=False)


def test_adult_malformed_rows_are_named(tmp_path):
    write_adult(tmp_path)
    (tmp_path / "adult" / "adult.data").write_text("39, State-gov, 77516\n")
    with pytest.raises(DatasetUnavailable, match="a row of 3 values"):
        load_dataset("adult", tmp_path, download=False)


def write_imdb(root):
    reviews = {
        "train": {"pos": ["A great film.<br />Great acting!", "great great fun"],
                  "neg": ["Dull and boring, don't watch.", "boring plot; a dull film"]},
        "test": {"pos": ["Great fun, unseenword"], "neg": ["boring"]},
    }
    for split, by in reviews.items():
        for sentiment, texts in by.items():
            folder = root / "aclImdb" / split / sentiment
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_{8 if sentiment == 'pos' else 2}.txt").write_text(text)
            (root / "aclImdb" / split / "urls_pos.txt").write_text("")


def test_tokenizer_and_vocabulary_come_from_the_training_split():
    assert sources.tokenize("Don't<br />WATCH it, 10/10!") == ["don't", "watch", "it", "10", "10"]
    docs = [["b", "a", "b"], ["c", "a", "b"]]
    vocab = sources.build_vocabulary(docs, size=4)
    assert vocab == {"b": 2, "a": 3}  # most frequent first, 0 padding and 1 unknown reserved
    ids = sources.encode([["a", "z", "b", "b"], ["b"]], vocab, length=3)
    assert ids.tolist() == [[3, 1, 2], [2, 0, 0]]


def test_imdb_in_its_archive_format(tmp_path):
    write_imdb(tmp_path)
    data = load_dataset("imdb", tmp_path, download=False)
    assert data.train.inputs.dtype == torch.int64 and tuple(data.train.inputs.shape) == (4, 256)
    assert data.train.labels.tolist() == [0, 0, 1, 1]  # neg then pos
    vocab = sources.build_vocabulary(sources.read_reviews(tmp_path / "aclImdb" / "train")[0], 20_002)
    assert "unseenword" not in vocab  # a test-only word is out of the vocabulary
    test_pos = data.test.inputs[1]
    assert test_pos[:3].tolist() == [vocab["great"], vocab["fun"], sources.UNKNOWN_ID]
    assert int(test_pos.max()) < data.spec.vocab_size and (test_pos[3:] == 0).all()


def test_imdb_missing_files_give_one_message(tmp_path):
    with pytest.raises(DatasetUnavailable, match="aclImdb/train/pos/.*ai.stanford.edu|ai.stanford.edu.*aclImdb"):
        load_dataset("imdb", tmp_path, download=False)


def write_tinyimagenet(root):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # numbered in sorted order, whatever wnids.txt's order
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "train" / w / "images" / f"{w}_{i}.JPEG")
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(base / "val" / "images" / "val_0.JPEG")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(base / "val" / "images" / "val_1.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t1\t2\t3\n"
                                                      "val_1.JPEG\tn01\t0\t1\t2\t3\n")


def test_tinyimagenet_in_its_folder_format(tmp_path):
    write_tinyimagenet(tmp_path)
    data = load_dataset("tinyimagenet", tmp_path, download=False)
    assert data.train.inputs.dtype == torch.uint8 and tuple(data.train.inputs.shape) == (4, 3, 64, 64)
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.labels.tolist() == [1, 0]
    assert (data.test.inputs[0] == 200).all()  # a grey JPEG becomes three equal channels
    scaled = data.train.inputs.double() / 255
    assert np.allclose(data.mean, scaled.mean(dim=(0, 2, 3)).tolist())  # the train split's own
    assert np.allclose(data.std, scaled.std(dim=(0, 2, 3), unbiased=False).tolist())
    assert data.spec.inputs().shape == (3, 64, 64)


def test_tinyimagenet_trains_at_64_pixels_with_crop_and_flip(tmp_path):
    from harness.data.tensors import make_pipeline

    write_tinyimagenet(tmp_path)
    data = load_dataset("tinyimagenet", tmp_path, download=False)
    pipe = make_pipeline(data.spec, data.mean, data.std, "cpu")
    padded = pipe.pad(data.train.inputs)
    zero = torch.zeros(4, dtype=torch.int64)
    x = pipe.train_batch(padded, zero + 4, zero + 4, torch.tensor([False, True, False, False]))
    assert tuple(x.shape) == (4, 3, 64, 64)
    plain = pipe.test_batch(data.train.inputs)
    assert torch.equal(x[0], plain[0]) and torch.equal(x[1], plain[1].flip(-1))


def _idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(str(path) + ".gz", "wb") as fh:  # as torchvision downloads them
        fh.write(header + array.astype(np.uint8).tobytes())
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_as_features_in_its_idx_format(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 3)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    fakedata.register_md5(monkeypatch, tmp_path)  # the catalogue's published md5s are these files'
    data = load_dataset("mnist", tmp_path, download=False)
    assert tuple(data.train.inputs.shape) == (6, 784) and data.train.inputs.dtype == torch.float32
    assert data.test.labels.tolist() == [0, 1, 2]
    first = data.train.inputs[0].view(28, 28)
    assert torch.allclose(first * 0.3081 + 0.1307, first.new_tensor(
        np.random.default_rng(0).integers(0, 256, (6, 28, 28))[0] / 255.0), atol=1e-6)

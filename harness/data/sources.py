"""Reading datasets from their published files: the MNIST family's IDX files and CIFAR's pickled
batches (from the bytes :mod:`harness.data.files` has verified), UCI Adult, the IMDB review
archive and Tiny ImageNet's folders. Each reader returns NumPy arrays;
:func:`harness.data.tensors.load_dataset` makes them a Dataset.

Every choice that turns the files into numbers is fixed here, from the training split only, so
that no test sample shapes the inputs: Adult's category lists are those ``adult.names`` documents
(a value it does not list, ``?`` included, is all zeros); IMDB's vocabulary is the training
reviews' most frequent words.
"""

from __future__ import annotations

import pickle
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# IDX (LeCun's format: MNIST, Fashion-MNIST) and CIFAR's pickled batches, from verified bytes
# --------------------------------------------------------------------------------------------


def read_idx(data: bytes) -> np.ndarray:
    """An IDX file's array: a big-endian header (two zero bytes, the type 0x08 for unsigned bytes,
    the number of dimensions, then each dimension as a uint32), then the values."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims}, the file holds {body.size} values")
    return body.reshape(dims).copy()  # writable, and free of the file's bytes


def read_mnist_family(blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Images ``[N, 1, 28, 28]`` uint8 and int64 labels of both splits, from the four IDX files."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(blobs[f"{prefix}-images-idx3-ubyte"])
        labels = read_idx(blobs[f"{prefix}-labels-idx1-ubyte"]).astype(np.int64)
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{prefix}: {images.shape} images for {labels.shape} labels")
        out[f"{split}_x"], out[f"{split}_y"] = images[:, None], labels
    return out


def read_cifar(blobs: dict[str, bytes], folder: str, train: list[str], test: str,
               label_key: str) -> dict[str, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 (each row of ``data`` is the R, G then B plane) and labels,
    from CIFAR's pickled batches. Unpickled only after :func:`harness.data.files.verify`
    has matched every byte to the published files."""
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        entry = pickle.loads(blobs[f"{folder}/{name}"], encoding="latin1")  # noqa: S301 - verified
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(entry[label_key], dtype=np.int64)

    parts = [batch(n) for n in train]
    test_x, test_y = batch(test)
    return {"train_x": np.concatenate([p[0] for p in parts]),
            "train_y": np.concatenate([p[1] for p in parts]), "test_x": test_x, "test_y": test_y}


# --------------------------------------------------------------------------------------------
# UCI Adult (Kohavi 1996): adult.data (32,561 rows) and adult.test (16,281, after a header line)
# --------------------------------------------------------------------------------------------

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income"]
ADULT_CONTINUOUS = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                    "hours-per-week"]
# The values adult.names lists, in its order.
ADULT_CATEGORIES: dict[str, list[str]] = {
    "workclass": ["Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
                  "State-gov", "Without-pay", "Never-worked"],
    "education": ["Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm",
                  "Assoc-voc", "9th", "7th-8th", "12th", "Masters", "1st-4th", "10th", "Doctorate",
                  "5th-6th", "Preschool"],
    "marital-status": ["Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed",
                       "Married-spouse-absent", "Married-AF-spouse"],
    "occupation": ["Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
                   "Prof-specialty", "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical",
                   "Farming-fishing", "Transport-moving", "Priv-house-serv", "Protective-serv",
                   "Armed-Forces"],
    "relationship": ["Wife", "Own-child", "Husband", "Not-in-family", "Other-relative",
                     "Unmarried"],
    "race": ["White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"],
    "sex": ["Female", "Male"],
    "native-country": [
        "United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany",
        "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece", "South", "China", "Cuba", "Iran",
        "Honduras", "Philippines", "Italy", "Poland", "Jamaica", "Vietnam", "Mexico", "Portugal",
        "Ireland", "France", "Dominican-Republic", "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia",
        "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand", "Yugoslavia", "El-Salvador",
        "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands"],
}
ADULT_FEATURES = len(ADULT_CONTINUOUS) + sum(len(v) for v in ADULT_CATEGORIES.values())  # 105


def read_adult_rows(path: Path) -> tuple[np.ndarray, list[dict[str, str]], np.ndarray]:
    """One file's continuous columns ``[N, 6]`` (float64), categorical values and labels (1 for
    income >50K). Blank lines and adult.test's ``|1x3 Cross validator`` line are skipped; the test
    file's labels end in a full stop."""
    continuous, categorical, labels = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("|"):
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(ADULT_COLUMNS):
            raise ValueError(f"{path.name}: a row of {len(values)} values, not "
                             f"{len(ADULT_COLUMNS)}: {line[:80]!r}")
        row = dict(zip(ADULT_COLUMNS, values))
        continuous.append([float(row[c]) for c in ADULT_CONTINUOUS])
        categorical.append({c: row[c] for c in ADULT_CATEGORIES})
        income = row["income"].rstrip(".")
        if income not in (">50K", "<=50K"):
            raise ValueError(f"{path.name}: income {row['income']!r} is neither >50K nor <=50K")
        labels.append(int(income == ">50K"))
    return np.asarray(continuous, dtype=np.float64), categorical, np.asarray(labels, dtype=np.int64)


def one_hot_adult(categorical: list[dict[str, str]]) -> np.ndarray:
    """``[N, 99]``: one column per listed value of each categorical attribute, in adult.names'
    order; an unlisted value (``?``: unknown) leaves its attribute's columns at zero."""
    blocks = []
    for column, values in ADULT_CATEGORIES.items():
        index = {v: i for i, v in enumerate(values)}
        block = np.zeros((len(categorical), len(values)), dtype=np.float64)
        for n, row in enumerate(categorical):
            if row[column] in index:
                block[n, index[row[column]]] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def read_adult(folder: Path) -> dict[str, np.ndarray]:
    """Train and test features ``[N, 105]`` (the continuous six standardised with the train
    split's mean and std, then the one-hot columns) and labels; ``mean``/``std`` of the six."""
    out: dict[str, np.ndarray] = {}
    parts = {split: read_adult_rows(folder / name)
             for split, name in (("train", "adult.data"), ("test", "adult.test"))}
    mean, std = parts["train"][0].mean(0), parts["train"][0].std(0)
    std = np.where(std > 0, std, 1.0)
    for split, (continuous, categorical, labels) in parts.items():
        out[f"{split}_x"] = np.concatenate([(continuous - mean) / std, one_hot_adult(categorical)],
                                           axis=1).astype(np.float32)
        out[f"{split}_y"] = labels
    out["mean"], out["std"] = mean, std
    return out


# --------------------------------------------------------------------------------------------
# IMDB reviews (Maas et al. 2011): aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt
# --------------------------------------------------------------------------------------------

PAD_ID, UNKNOWN_ID = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers (an apostrophe kept inside a word: don't, movie's); the
    reviews' ``<br />`` line breaks are spaces."""
    return _WORD.findall(text.lower().replace("<br />", " "))


def build_vocabulary(documents: list[list[str]], size: int) -> dict[str, int]:
    """The ``size - 2`` most frequent words of ``documents`` (ties in alphabetical order), ids from
    2 up; 0 is padding and 1 any other word."""
    counts = Counter(word for doc in documents for word in doc)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size - 2]
    return {word: i + 2 for i, (word, _) in enumerate(ranked)}


def encode(documents: list[list[str]], vocabulary: dict[str, int], length: int) -> np.ndarray:
    """``[N, length]`` int64 ids: each document's first ``length`` words, padded with 0 after."""
    ids = np.full((len(documents), length), PAD_ID, dtype=np.int64)
    for n, doc in enumerate(documents):
        row = [vocabulary.get(w, UNKNOWN_ID) for w in doc[:length]]
        ids[n, :len(row)] = row
    return ids


def read_reviews(folder: Path) -> tuple[list[list[str]], np.ndarray]:
    """The tokenised reviews of one split folder (neg then pos, files in name order) and their
    labels (1 positive)."""
    documents, labels = [], []
    for label, sentiment in ((0, "neg"), (1, "pos")):
        files = sorted((folder / sentiment).glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no reviews in {folder / sentiment}")
        for path in files:
            documents.append(tokenize(path.read_text(encoding="utf-8", errors="replace")))
            labels.append(label)
    return documents, np.asarray(labels, dtype=np.int64)


def read_imdb(folder: Path, vocab_size: int, length: int) -> dict[str, np.ndarray]:
    """Token ids and labels of both splits, the vocabulary built from the training reviews only."""
    train_docs, train_y = read_reviews(folder / "train")
    test_docs, test_y = read_reviews(folder / "test")
    vocabulary = build_vocabulary(train_docs, vocab_size)
    return {"train_x": encode(train_docs, vocabulary, length), "train_y": train_y,
            "test_x": encode(test_docs, vocabulary, length), "test_y": test_y}


# --------------------------------------------------------------------------------------------
# Tiny ImageNet: wnids.txt; train/<wnid>/images/*.JPEG; val/images/*.JPEG + val_annotations.txt
# --------------------------------------------------------------------------------------------


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # some are grey


def read_tinyimagenet(folder: Path) -> dict[str, np.ndarray]:
    """uint8 images ``[N, 3, 64, 64]`` and labels of the train split and of the validation split
    (the test split's labels are not published, so validation is the test set, as usual). Classes
    are the wnids in sorted order, as torchvision's ImageFolder numbers them."""
    wnids = sorted((folder / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}
    train_files = [(p, index[w]) for w in wnids
                   for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    val_files = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            name, wnid = line.split("\t")[:2]
            val_files.append((folder / "val" / "images" / name, index[wnid]))
    out = {}
    for split, files in (("train", train_files), ("test", val_files)):
        if not files:
            raise FileNotFoundError(f"no {split} images under {folder}")
        out[f"{split}_x"] = np.stack([_image(p) for p, _ in files]).transpose(0, 3, 1, 2)
        out[f"{split}_y"] = np.asarray([label for _, label in files], dtype=np.int64)
    return out


# --------------------------------------------------------------------------------------------
# The readers the dataset catalogue names (harness.protocol.catalog.DatasetSpec.loader): each
# takes the verified copy (harness.data.files.Found: ``blobs``, the verified files'
# bytes, and ``copy.place``, its folder) and the dataset's spec, and returns its arrays:
# ``train_x``, ``train_y``, ``test_x``, ``test_y``, and ``mean`` and ``std`` where they are the
# data's own (else the spec's are used).
# --------------------------------------------------------------------------------------------


def mnist_arrays(found, spec) -> dict[str, np.ndarray]:
    return read_mnist_family(found.blobs)


def cifar10_arrays(found, spec) -> dict[str, np.ndarray]:
    return read_cifar(found.blobs, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                      "test_batch", "labels")


def cifar100_arrays(found, spec) -> dict[str, np.ndarray]:
    return read_cifar(found.blobs, "cifar-100-python", ["train"], "test", "fine_labels")


def adult_arrays(found, spec) -> dict[str, np.ndarray]:
    return read_adult(found.copy.place / "adult")


def imdb_arrays(found, spec) -> dict[str, np.ndarray]:
    return read_imdb(found.copy.place / "aclImdb", spec.vocab_size, spec.shape[0])


def tinyimagenet_arrays(found, spec) -> dict[str, np.ndarray]:
    """Normalised with the train split's own per-channel statistics."""
    arrays = read_tinyimagenet(found.copy.place / "tiny-imagenet-200")
    mean, std = channel_stats(arrays["train_x"])
    return {**arrays, "mean": np.asarray(mean), "std": np.asarray(std)}


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (biased) std of uint8 images ``[N, C, H, W]`` scaled to [0, 1], exactly,
    from each channel's histogram of its 256 levels: no float copy of the images (Tiny ImageNet's
    train split is 1.2G values, 10 GB in float64)."""
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256)
        m = counts @ levels / counts.sum()
        mean.append(float(m))
        std.append(float(np.sqrt(counts @ (levels - m) ** 2 / counts.sum())))
    return mean, std

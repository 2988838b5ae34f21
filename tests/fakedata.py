"""Tiny CIFAR-10, CIFAR-100 and FashionMNIST folders in torchvision's exact on-disk formats.

CIFAR: pickled dicts (``data`` uint8 [N, 3072] in R, G, B planes; ``labels`` or ``fine_labels``)
plus a meta file. FashionMNIST: uncompressed big-endian IDX files (magic 0x00000803 for images,
0x00000801 for labels) under ``raw/``. The catalogue checks every file against the published md5
sums: :func:`register_md5` points the real check at the files written here.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10, seed: int = 0):
    """Write 5 train batches and a test batch; return (train_hwc, train_labels, test_hwc, test_labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y,
                                           "data": x, "filenames": [f"img{j}.png" for j in range(per_batch)]})
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    ty = rng.integers(0, 10, n_test).tolist()
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ty, "data": tx,
                                  "filenames": [f"t{j}.png" for j in range(n_test)]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072,
                                    "label_names": [f"class{k}" for k in range(10)]})
    to_hwc = lambda a: a.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # noqa: E731
    return to_hwc(np.vstack(train_x)), np.array(train_y), to_hwc(tx), np.array(ty)


def write_cifar100(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        _dump(folder / name, {"filenames": [f"{name}{j}.png" for j in range(n)], "batch_label": name,
                              "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": x})
        out += [x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(fine)]
    _dump(folder / "meta", {"fine_label_names": [f"fine{k}" for k in range(100)],
                            "coarse_label_names": [f"coarse{k}" for k in range(20)]})
    return tuple(out)


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = 0x0800 | array.ndim  # type 0x08 = unsigned byte
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fmnist(root: Path, n_train: int = 20, n_test: int = 8, seed: int = 2):
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    out = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out += [x, y.astype(np.int64)]
    return tuple(out)


def register_md5(monkeypatch, root: Path) -> None:
    """Make the catalogue's published md5 sums (harness.data.files) those of the tiny
    files written under ``root``, so that the real verification runs on them."""
    import dataclasses

    from harness.data import files as datafiles

    for name in ("cifar10", "cifar100", "fmnist", "mnist"):
        pub = datafiles.PUBLISHED[name]
        copies, _ = datafiles.copies_in(name, root)
        if not copies or copies[0].archive:
            continue
        files = []
        for f in pub.files:
            data = datafiles._decompressed(copies[0].paths[f.name])
            files.append(datafiles.DataFile(f.name, hashlib.md5(data).hexdigest(), len(data)))
        monkeypatch.setitem(datafiles.PUBLISHED, name, dataclasses.replace(pub, files=tuple(files)))


def hide_system_datasets(monkeypatch) -> None:
    """No system folder (Debian's /usr/share/datasets/...) is searched: tests see only their files."""
    import dataclasses

    from harness.data import files as datafiles

    for name, pub in list(datafiles.PUBLISHED.items()):
        monkeypatch.setitem(datafiles.PUBLISHED, name, dataclasses.replace(pub, system=()))

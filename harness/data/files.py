"""Where each dataset's published files are on this machine, and whether they are the published ones.

A dataset is found where it is, in the form it is published in: the MNIST family's four IDX files
gzipped or not, flat or in torchvision's ``NAME/raw/`` layout; CIFAR's ``cifar-*-python.tar.gz``
archive or its extracted folder. The places searched, in order (:func:`search_roots`): the
``--data-root`` given, ``$HARNESS_DATA``, the cache (``~/.cache/harness/data``), then the folders
distributions install datasets to (Debian's ``dataset-fashion-mnist``:
``/usr/share/datasets/fashion-mnist``).

Each file is verified by the md5 of its *decompressed* content, the values torchvision and the
datasets' pages publish: a recompressed archive (Debian's) passes, a corrupt or different file
fails with its path and both hashes. The first intact copy is used; the run record lists its files
with their sha256. Nothing here writes: :mod:`harness.data.install` is the only module that
puts files into a data root. Torch-free, so ``harness data list`` starts in a blink.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.protocol.catalog import DATASETS, cache_data_root, default_data_root, resolve_dataset_name


class DataProblem(RuntimeError):
    """A dataset's files are missing, incomplete or not the published ones."""


class OtherDataset(DataProblem):
    """A file is intact, but another dataset's (MNIST and Fashion-MNIST share file names)."""


@dataclass(frozen=True)
class DataFile:
    """One published file: its name under the dataset's folder (a trailing ``/``: a folder that must
    hold files), the md5 of its decompressed content ("" where none is published) and its size."""

    name: str
    md5: str = ""
    size: int = 0


@dataclass(frozen=True)
class Published:
    """How a dataset is published, and how to get it."""

    files: tuple[DataFile, ...]
    folders: tuple[str, ...] = ("",)  # where the files sit under a root ("": the root itself)
    gzipped: bool = False  # each file may also be NAME.gz
    archive: str = ""  # a .tar.gz holding the files under their names, read as it is
    urls: tuple[str, ...] = ()  # mirrors: base URLs of the files (+ ".gz" when gzipped), or the archive
    debian: str = ""  # the Debian package that installs it
    system: tuple[str, ...] = ()  # absolute folders a distribution installs it to
    home: str = ""  # the dataset's page
    install_folder: str = ""  # where import and download put it under a data root

    @property
    def verified(self) -> bool:
        return all(f.md5 for f in self.files)

    def how_to_get(self) -> list[str]:
        """The ways to put this dataset on a machine: a package, or a download then an import."""
        ways = [f"apt-get install {self.debian}"] if self.debian else []
        if not self.urls:
            return ways
        url = self.urls[0]
        if archive_file(url):
            ways.append(f"download {url} and run `harness data import {archive_file(url)}`")
        else:
            names = ",".join(Path(f.name).name + ".gz" * self.gzipped for f in self.files)
            ways.append(f"download {url}{{{names}}} into a folder and run "
                        f"`harness data import FOLDER`")
        return ways


def archive_file(url: str) -> str | None:
    """The file name of an archive's URL (cifar-10-python.tar.gz); None for a folder's URL."""
    return url.rsplit("/", 1)[1] if url.endswith((".gz", ".zip")) else None


def _idx(md5s: tuple[str, str, str, str]) -> tuple[DataFile, ...]:
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    sizes = [47_040_016, 60_008, 7_840_016, 10_008]  # 16- and 8-byte headers, 28x28 bytes per image
    return tuple(DataFile(n, m, s) for n, m, s in zip(names, md5s, sizes))


# The md5 of each decompressed file, as torchvision lists them (FashionMNIST.raw_data, CIFAR10's
# train_list/test_list/meta); MNIST's as the original IDX files hash (torchvision lists only its
# .gz wrappers, whose md5 changes when a file is recompressed).
PUBLISHED: dict[str, Published] = {
    "fmnist": Published(
        _idx(("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
              "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965")),
        folders=("FashionMNIST/raw", "fashion-mnist", "FashionMNIST", ""), gzipped=True,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        debian="dataset-fashion-mnist", system=("/usr/share/datasets/fashion-mnist",),
        home="https://github.com/zalandoresearch/fashion-mnist", install_folder="FashionMNIST/raw"),
    "mnist": Published(
        _idx(("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
              "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")),
        folders=("MNIST/raw", "mnist", "MNIST", ""), gzipped=True,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        home="http://yann.lecun.com/exdb/mnist/", install_folder="MNIST/raw"),
    "cifar10": Published(
        tuple(DataFile(f"cifar-10-batches-py/{n}", m) for n, m in [
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")]),
        archive="cifar-10-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        home="https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": Published(
        tuple(DataFile(f"cifar-100-python/{n}", m) for n, m in [
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", "7973b15100ade9c7d40fb424638fde48")]),
        archive="cifar-100-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        home="https://www.cs.toronto.edu/~kriz/cifar.html"),
    # No checksums are published for these three: they are found and recorded, not verified.
    "adult": Published(
        (DataFile("adult/adult.data"), DataFile("adult/adult.test")),
        urls=("https://archive.ics.uci.edu/ml/machine-learning-databases/adult/",),
        home="https://archive.ics.uci.edu/dataset/2/adult"),
    "imdb": Published(
        tuple(DataFile(f"aclImdb/{s}/{c}/") for s in ("train", "test") for c in ("pos", "neg")),
        urls=("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
        home="https://ai.stanford.edu/~amaas/data/sentiment/"),
    "tinyimagenet": Published(
        (DataFile("tiny-imagenet-200/wnids.txt"), DataFile("tiny-imagenet-200/train/"),
         DataFile("tiny-imagenet-200/val/images/"), DataFile("tiny-imagenet-200/val/val_annotations.txt")),
        urls=("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
        home="https://www.kaggle.com/c/tiny-imagenet"),
}


def search_roots(data_root: str | Path | None = None) -> list[Path]:
    """The data roots searched, in order: ``data_root``, ``$HARNESS_DATA``, the cache."""
    roots = [Path(data_root).expanduser()] if data_root else []
    if os.environ.get("HARNESS_DATA"):
        roots.append(Path(os.environ["HARNESS_DATA"]).expanduser())
    return list(dict.fromkeys([*roots, cache_data_root()]))


def install_root(data_root: str | Path | None = None) -> Path:
    """Where import and download put files: ``data_root``, else ``$HARNESS_DATA``, else the cache."""
    return Path(data_root).expanduser() if data_root else default_data_root()


# --------------------------------------------------------------------------------------------
# Copies: a complete set of a dataset's files in one place
# --------------------------------------------------------------------------------------------


@dataclass
class Copy:
    """One complete set of a dataset's files: in ``place`` (a folder), or in the archive ``place``.
    ``paths`` maps each published name to the file found (``.gz`` where it is gzipped)."""

    dataset: str
    place: Path
    archive: bool = False
    paths: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.place} (archive)" if self.archive else str(self.place)


def _find_file(folder: Path, f: DataFile, gzipped: bool) -> Path | None:
    """The file (or non-empty folder) ``f`` in ``folder``; None when absent or unreadable."""
    try:
        if f.name.endswith("/"):
            d = folder / f.name
            return d if d.is_dir() and any(d.iterdir()) else None
        for candidate in ([folder / f.name, folder / (f.name + ".gz")] if gzipped else [folder / f.name]):
            if candidate.is_file():
                return candidate
    except OSError:  # a folder this user may not enter: nothing found there
        return None
    return None


def copies_in(name: str, root: Path) -> tuple[list[Copy], list[str]]:
    """The complete copies of ``name`` under ``root`` (its layouts, then its archive), and a note
    per layout that holds some of its files but not all."""
    pub, found, partial = PUBLISHED[name], [], []
    for sub in pub.folders:
        folder = root / sub if sub else root
        paths = {f.name: _find_file(folder, f, pub.gzipped) for f in pub.files}
        present = {k: v for k, v in paths.items() if v is not None}
        if len(present) == len(pub.files):
            found.append(Copy(name, folder, paths=present))
        elif present:
            missing = [k for k in paths if paths[k] is None]
            partial.append(f"{folder} is incomplete: no {', '.join(missing)}")
    try:
        if pub.archive and (root / pub.archive).is_file():
            found.append(Copy(name, root / pub.archive, archive=True))
    except OSError:
        pass
    return found, partial


def places(name: str, data_root: str | Path | None = None) -> list[Path]:
    """Every root searched for ``name``: the data roots, then its distribution's folders."""
    return search_roots(data_root) + [Path(p) for p in PUBLISHED[name].system]


def find_copies(name: str, data_root: str | Path | None = None) -> tuple[list[Copy], list[str]]:
    copies, notes = [], []
    for root in places(name, data_root):
        c, n = copies_in(name, root)
        copies += c
        notes += n
    return copies, notes


# --------------------------------------------------------------------------------------------
# Verification: the content read once, hashed, and handed to the reader that parses it
# --------------------------------------------------------------------------------------------


@dataclass
class Verified:
    """A copy whose files are the published ones: their decompressed bytes (byte-read datasets),
    and what the run record says of each (``files``)."""

    copy: Copy
    blobs: dict[str, bytes]
    files: list[dict]
    verified: bool


# What reading a corrupt, truncated or unreadable file raises: each becomes a DataProblem.
UNREADABLE = (OSError, EOFError, zlib.error, tarfile.TarError, gzip.BadGzipFile)


def _decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _member_name(name: str) -> str:
    while name.startswith("./"):  # archives made with `tar -C dir .` name their members ./x
        name = name[2:]
    return name


def _archive_members(path: Path, wanted: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile() and _member_name(member.name) in wanted:
                body = tar.extractfile(member)  # None only for what is not a regular file
                if body is not None:
                    out[_member_name(member.name)] = body.read()
    return out


def _other_form(path: Path) -> Path | None:
    """NAME.gz beside NAME and NAME beside NAME.gz: a half-extracted file next to an intact one."""
    other = path.with_name(path.name[:-3]) if path.name.endswith(".gz") else path.with_name(path.name + ".gz")
    try:
        return other if other.is_file() else None
    except OSError:
        return None


def owner_of(md5: str) -> str | None:
    """``dataset/file`` whose published md5 is ``md5`` (a file of another dataset), or None."""
    for ds, pub in PUBLISHED.items():
        for f in pub.files:
            if f.md5 and f.md5 == md5:
                return f"{ds}'s {f.name}"
    return None


def verify(copy: Copy) -> Verified:
    """Read every file of ``copy``, check its decompressed content against the published md5
    (and size), and keep the bytes. Raises DataProblem naming the first file that differs, or
    OtherDataset when the copy is, by its content, another dataset's (MNIST's layouts match
    Fashion-MNIST's file names)."""
    pub = PUBLISHED[copy.dataset]
    try:
        if not pub.verified:  # no published hashes (folders of many files among them): recorded only
            recorded: list[dict[str, Any]] = [{"name": f.name, "path": str(copy.paths[f.name])}
                                              for f in pub.files]
            for row in recorded:
                if not row["name"].endswith("/"):
                    data = Path(row["path"]).read_bytes()
                    row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            return Verified(copy, {}, recorded, verified=False)
        if copy.archive:
            blobs = _archive_members(copy.place, {f.name for f in pub.files})
        else:
            blobs = {}
            for f in pub.files:
                blobs[f.name] = _decompressed(copy.paths[f.name])
                other = _other_form(copy.paths[f.name])
                if hashlib.md5(blobs[f.name]).hexdigest() != f.md5 and other is not None:
                    alternative = _decompressed(other)
                    if hashlib.md5(alternative).hexdigest() == f.md5:
                        blobs[f.name], copy.paths[f.name] = alternative, other
    except UNREADABLE as exc:
        raise DataProblem(f"{copy.dataset}: {copy.describe()} cannot be read "
                          f"({type(exc).__name__}: {exc})") from None
    files: list[dict[str, Any]] = []
    wrong: list[tuple[DataFile, str, str, int, str | None]] = []  # file, where, md5, size, owner
    for f in pub.files:
        where = f"{copy.place}:{f.name}" if copy.archive else str(copy.paths[f.name])
        if f.name not in blobs:
            raise DataProblem(f"{copy.dataset}: {copy.place} holds no {f.name}")
        data = blobs[f.name]
        md5 = hashlib.md5(data).hexdigest()
        if md5 != f.md5 or (f.size and len(data) != f.size):
            wrong.append((f, where, md5, len(data), owner_of(md5)))
        files.append({"name": f.name, "path": where, "bytes": len(data), "md5": md5,
                      "sha256": hashlib.sha256(data).hexdigest()})
    if wrong:
        f, where, md5, size, owner = wrong[0]
        message = (f"{copy.dataset}: {where} is not the published file: its content's md5 is {md5} "
                   f"({size:,} bytes), the published one's {f.md5}"
                   + (f" ({f.size:,} bytes)" if f.size else "") + (f"; it is {owner}" if owner else "")
                   + (f" (and {len(wrong) - 1} more file(s) differ)" if len(wrong) > 1 else ""))
        # Mostly another dataset's files: that dataset's copy, not a broken one of this dataset.
        theirs = sum(1 for w in wrong if w[4])
        raise (OtherDataset if theirs > len(pub.files) - len(wrong) else DataProblem)(message)
    return Verified(copy, blobs, files, verified=True)


def missing_message(name: str, data_root: str | Path | None, problems: list[str]) -> str:
    """Why ``name`` cannot be used here, where it was looked for, and how to get it; one line."""
    pub = PUBLISHED[name]
    layouts = ", ".join(f"{s}/" if s else "the folder itself" for s in pub.folders)
    what = (", ".join(f.name for f in pub.files) + " (each gzipped or not)" * pub.gzipped
            + (f" in {layouts}" if pub.folders != ("",) else "")
            + (f", or {pub.archive}" if pub.archive else ""))
    searched = ", ".join(str(p) for p in places(name, data_root))
    reason = "; ".join(problems) if problems else "no copy found"
    return (f"{name} is not available ({reason}). Searched {searched} for {what}. To get it: "
            f"{'; or '.join(pub.how_to_get()) or 'see ' + pub.home}.")


def locate(name: str, data_root: str | Path | None = None) -> tuple[Verified | None, list[str]]:
    """The first intact copy of ``name`` (None when there is none), and what was wrong with the
    copies before it and the incomplete ones (to say why, or to warn)."""
    name = resolve_dataset_name(name)
    copies, problems = find_copies(name, data_root)
    for copy in copies:
        try:
            return verify(copy), problems
        except DataProblem as exc:
            problems.append(str(exc))
    return None, problems


def status(name: str, data_root: str | Path | None = None) -> dict:
    """What ``harness data list`` says of one dataset: present, where, verified, size, how to get."""
    if DATASETS[name].built_in:
        return {"dataset": name, "present": True, "where": DATASETS[name].built_in, "verified": None,
                "bytes": 0, "problems": [], "get": []}
    found, problems = locate(name, data_root)
    pub = PUBLISHED[name]
    row = {"dataset": name, "present": found is not None, "where": None, "verified": None,
           "bytes": 0, "problems": problems, "get": pub.how_to_get(), "debian": pub.debian,
           "home": pub.home}
    if found is not None:
        row.update(where=found.copy.describe(), verified=found.verified,
                   bytes=_disk_bytes(found.copy), files=found.files)
    return row


def _disk_bytes(copy: Copy) -> int:
    try:
        if copy.archive:
            return copy.place.stat().st_size
        total = 0
        for p in copy.paths.values():
            if p.is_dir():
                total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
            else:
                total += p.stat().st_size
        return total
    except OSError:
        return 0

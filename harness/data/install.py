"""Putting a dataset into a data root: ``harness data import PATH`` and downloads.

The only module that writes into a data root, and it writes only copies it has verified: the
files are assembled in a hidden folder of the root (``.harness-import-*``), checked (the published
md5 of each file's content, :mod:`harness.data.files`), then moved into place one rename
each. On any failure that folder goes, and so does every folder this import created: nothing is
left behind, no empty folder either. Downloads go to the system's temporary folder first, so a
failed or refused download never touches a data root at all.
"""

from __future__ import annotations

import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from harness.data.files import (
    PUBLISHED,
    UNREADABLE,
    Copy,
    DataProblem,
    OtherDataset,
    archive_file,
    copies_in,
    install_root,
    verify,
)
from harness.protocol.catalog import resolve_dataset_name

TIMEOUT_S = 30


class _Creation:
    """The folders one import created, removed again (deepest first, only if empty) on failure."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def mkdirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self.made.append(d)

    def undo(self) -> None:
        for d in reversed(self.made):
            try:
                d.rmdir()
            except OSError:
                pass


def _archive_names(name: str) -> set[str]:
    pub = PUBLISHED[name]
    return {n for n in [pub.archive, *map(archive_file, pub.urls)] if n}


def _unpack(archive: Path, into: Path) -> None:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")


def _top_folders() -> dict[str, str]:
    """The folder each dataset's files sit in (cifar-10-batches-py, aclImdb, ...) -> the dataset."""
    return {f.name.split("/")[0]: name for name, pub in PUBLISHED.items()
            for f in pub.files if "/" in f.name}


def recognise(path: Path) -> list[tuple[str, Path, bool]]:
    """What ``path`` holds: (dataset, root or archive, is an archive to unpack) per dataset. A
    dataset's own folder (cifar-10-batches-py/, aclImdb/) or one of its files means its root."""
    if path.is_file():
        for name in PUBLISHED:
            if path.name in _archive_names(name):
                return [(name, path, path.name != PUBLISHED[name].archive)]
        for name, pub in PUBLISHED.items():
            if any(path.name in (Path(f.name).name, Path(f.name).name + ".gz") for f in pub.files):
                return recognise(path.parent)
        return []
    found = [(name, path, False) for name in PUBLISHED if copies_in(name, path)[0]]
    owner = _top_folders().get(path.name)
    if not found and owner and copies_in(owner, path.parent)[0]:
        return [(owner, path.parent, False)]
    if not found and path.parent.name in _top_folders():  # aclImdb/train: the dataset's root above
        return recognise(path.parent)
    return found


def _target(copy: Copy, root: Path, name: str) -> Path:
    """Where a copy's file ``name`` goes under ``root``: the dataset's install folder, in the form
    (gzipped or not) it has in the copy."""
    pub = PUBLISHED[copy.dataset]
    base = root / pub.install_folder if pub.install_folder else root
    return base / (name + (".gz" if copy.paths[name].name.endswith(".gz") else ""))


def _install(copy: Copy, root: Path) -> list[Path]:
    """Copy a verified copy's files under ``root``; returns the paths written. All or nothing: what
    a file replaces (the other form of it too, NAME beside NAME.gz) is moved aside into the staging
    folder first, by rename (a symbolic link moves as a link: nothing it points to is touched), and
    moved back if a later step fails."""
    creation = _Creation()
    creation.mkdirs(root)
    staging = Path(tempfile.mkdtemp(prefix=".harness-import-", dir=root))
    moves: list[tuple[Path, Path]] = []
    done: list[tuple[Path, list[tuple[Path, Path]]]] = []  # installed file, what it moved aside
    try:
        if copy.archive:
            shutil.copyfile(copy.place, staging / "new-0")
            moves.append((staging / "new-0", root / PUBLISHED[copy.dataset].archive))
        else:
            for i, (name, src) in enumerate(copy.paths.items()):
                staged = staging / f"new-{i}"
                (shutil.copytree if src.is_dir() else shutil.copyfile)(src, staged)
                moves.append((staged, _target(copy, root, name)))
        for _, final in moves:  # never write through a link (into a folder outside the root)
            for parent in final.parents:
                if parent == root or root not in parent.parents:
                    break
                if parent.is_symlink():
                    raise DataProblem(f"{parent} is a symbolic link: the harness writes no file "
                                      "through it; remove it, or import into another --data-root")
        for i, (staged, final) in enumerate(moves):
            creation.mkdirs(final.parent)
            other = final.with_name(final.name[:-3]) if final.name.endswith(".gz") else None
            aside = []
            for j, old in enumerate(p for p in (final, other) if p is not None):
                if old.is_symlink() or old.exists():
                    old.rename(staging / f"old-{i}-{j}")
                    aside.append((staging / f"old-{i}-{j}", old))
            staged.rename(final)
            done.append((final, aside))
    except BaseException:
        for final, aside in reversed(done):  # back to what the root held before
            (shutil.rmtree if final.is_dir() and not final.is_symlink() else os.unlink)(final)
            for kept, old in aside:
                kept.rename(old)
        shutil.rmtree(staging, ignore_errors=True)
        creation.undo()
        raise
    shutil.rmtree(staging, ignore_errors=True)  # what was replaced; links inside are not followed
    return [final for _, final in moves]


def _import_one(name: str, source: Path, unpack: bool, root: Path) -> dict:
    if unpack:
        with tempfile.TemporaryDirectory(prefix="harness-unpack-") as tmp:
            try:
                _unpack(source, Path(tmp))
            except (*UNREADABLE, zipfile.BadZipFile) as exc:
                raise DataProblem(f"{name}: {source} cannot be unpacked "
                                  f"({type(exc).__name__}: {exc})") from None
            return _import_one(name, Path(tmp), False, root)
    copies, partial = copies_in(name, source) if source.is_dir() else (
        [Copy(name, source, archive=True)], [])
    if not copies:
        raise DataProblem(f"{name}: no complete copy in {source}" + (f" ({'; '.join(partial)})"
                                                                    if partial else ""))
    checked = verify(copies[0])

    def content(files: list[dict]) -> list[tuple]:
        return [(f["name"], f.get("sha256")) for f in files]

    for there in copies_in(name, root)[0]:
        try:
            if checked.verified and content(verify(there).files) == content(checked.files):
                return {"dataset": name, "from": str(source), "to": there.describe(),
                        "written": [], "verified": True, "already": True}
        except DataProblem:
            pass
    written = _install(copies[0], root)
    return {"dataset": name, "from": str(source), "to": str(root), "written": [str(w) for w in written],
            "verified": checked.verified, "already": False}


def import_path(path: str | Path, data_root: str | Path | None = None) -> list[dict]:
    """Import every dataset found at ``path`` (a folder, an archive, or one of a dataset's files,
    meaning its folder) into the data root, verified: a row per dataset, with ``error`` where its
    files are not the published ones (nothing of it is written then). Raises DataProblem when
    nothing is recognised."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataProblem(f"{path} does not exist")
    found = recognise(path)
    if not found:
        known = ", ".join(sorted({n for d in PUBLISHED for n in _archive_names(d)}))
        raise DataProblem(f"no dataset recognised at {path}: expected a folder holding a "
                          f"dataset's files (harness data list says which), or one of {known}")
    root, rows = install_root(data_root), []
    for name, source, unpack in found:
        try:
            rows.append(_import_one(name, source, unpack, root))
        except OtherDataset:
            continue  # e.g. Fashion-MNIST's files, which MNIST's layout matches by name
        except DataProblem as exc:
            rows.append({"dataset": name, "from": str(source), "error": str(exc)})
    if not rows:
        raise DataProblem(f"no dataset recognised at {path}: its files are none of the "
                          f"published ones (harness data list names them)")
    return rows


# --------------------------------------------------------------------------------------------
# Downloads: into the system's temporary folder, then imported as a user's download would be
# --------------------------------------------------------------------------------------------


def _reason(url: str, exc: BaseException) -> str:
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"no network: cannot resolve {host}"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer from {host} within {TIMEOUT_S} s"
    return f"cannot fetch {url}: {type(reason).__name__}: {reason}"


def fetch(url: str, dest: Path) -> None:
    """``url`` into the file ``dest``; DataProblem with the real reason when it cannot be had."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise DataProblem(_reason(url, exc)) from None


def download(name: str, data_root: str | Path | None = None,
             say: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Download ``name`` from its mirrors and import it into the data root."""
    name = resolve_dataset_name(name)
    pub, reasons = PUBLISHED[name], []
    for url in pub.urls:
        with tempfile.TemporaryDirectory(prefix="harness-download-") as tmp:
            folder = Path(tmp)
            try:
                archive = archive_file(url)
                if archive:
                    say(f"downloading {url}")
                    target = folder / archive
                    fetch(url, target)
                else:
                    for f in pub.files:
                        file_url = url + Path(f.name).name + ".gz" * pub.gzipped
                        say(f"downloading {file_url}")
                        dest = folder / (f.name + ".gz" * pub.gzipped)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        fetch(file_url, dest)
                    target = folder
                rows = import_path(target, data_root)
            except DataProblem as exc:
                reasons.append(str(exc))
                continue
            # "the download of URL" rather than a temporary folder that is gone already
            errors = [r["error"].replace(f"{folder}/", "" if archive_file(url) else url)
                      for r in rows if "error" in r]
            if not errors:
                return rows
            reasons += errors
    raise DataProblem("download failed: " + "; ".join(reasons or ["no download address"]))

"""Datasets found where they are, in their published forms, verified by the content of each file;
imported and downloaded without ever leaving a trace on failure (harness.data.files,
harness.data.install, ``harness data``)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.data import files as datafiles
from harness.data import install as dataimport
from harness.data.tensors import DatasetUnavailable, load_dataset

import fakedata

IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
       "t10k-labels-idx1-ubyte"]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def gzip_into(src: Path, dest: Path, level: int = 9) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in IDX:
        (dest / f"{name}.gz").write_bytes(gzip.compress((src / name).read_bytes(), compresslevel=level))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def fmnist_raw(fmnist_root):
    root, arrays = fmnist_root
    return root / "FashionMNIST" / "raw", arrays


def test_fmnist_is_found_in_every_published_form(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    reference = load_dataset("fmnist", raw.parents[1], download=False)
    forms = {"flat_gz": tmp_path / "flat_gz", "torchvision_gz": tmp_path / "tv_gz" / "FashionMNIST" / "raw",
             "debian_name": tmp_path / "deb" / "fashion-mnist"}
    gzip_into(raw, forms["flat_gz"], level=1)  # recompressed: other .gz bytes, same content
    gzip_into(raw, forms["torchvision_gz"])
    gzip_into(raw, forms["debian_name"])
    links = tmp_path / "links" / "FashionMNIST" / "raw"
    links.mkdir(parents=True)
    for name in IDX:
        (links / f"{name}.gz").symlink_to(forms["flat_gz"] / f"{name}.gz")
    for root in (forms["flat_gz"], tmp_path / "tv_gz", tmp_path / "deb", tmp_path / "links"):
        ds = load_dataset("fmnist", root, download=False)
        assert torch.equal(ds.train.inputs, reference.train.inputs)
        assert torch.equal(ds.test.labels, reference.test.labels)
        assert [f["md5"] for f in ds.files] == [f["md5"] for f in reference.files]
    assert (gzip.compress(b"x", compresslevel=1) != gzip.compress(b"x", compresslevel=9))


def test_the_record_names_each_file_with_the_hashes_of_its_content(fmnist_raw):
    raw, _ = fmnist_raw
    ds = load_dataset("fmnist", raw.parents[1], download=False)
    assert [f["name"] for f in ds.files] == IDX
    for f in ds.files:
        content = (raw / f["name"]).read_bytes()
        assert f["path"] == str(raw / f["name"]) and f["bytes"] == len(content)
        assert f["sha256"] == __import__("hashlib").sha256(content).hexdigest()
    assert ds.source == str(raw) and ds.notes == ()


def test_a_file_that_differs_fails_with_its_path_and_both_hashes(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    labels = raw / "t10k-labels-idx1-ubyte"
    published = datafiles.PUBLISHED["fmnist"].files[3].md5
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fmnist", raw.parents[1], download=False)
    msg = str(err.value)
    assert str(labels) in msg and published in msg
    assert __import__("hashlib").md5(bytes(data)).hexdigest() in msg
    assert "apt-get install dataset-fashion-mnist" in msg  # and how to get an intact copy


def test_the_first_intact_copy_wins_and_an_earlier_bad_one_is_noted(fmnist_raw, tmp_path, monkeypatch):
    raw, _ = fmnist_raw
    bad = tmp_path / "bad" / "FashionMNIST" / "raw"
    shutil.copytree(raw, bad)
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\0")
    monkeypatch.setenv("HARNESS_DATA", str(raw.parents[1]))
    ds = load_dataset("fmnist", tmp_path / "bad", download=False)
    assert ds.source == str(raw)
    assert len(ds.notes) == 1 and "bad/FashionMNIST/raw/train-labels-idx1-ubyte" in ds.notes[0]


def test_search_order_is_data_root_harness_data_cache_then_the_system(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(datafiles.PUBLISHED, "fmnist",
                        __import__("dataclasses").replace(datafiles.PUBLISHED["fmnist"],
                                                          system=("/usr/share/datasets/fashion-mnist",)))
    assert datafiles.places("fmnist", tmp_path / "mine") == [
        tmp_path / "mine", tmp_path / "env", tmp_path / "cache" / "harness" / "data",
        Path("/usr/share/datasets/fashion-mnist")]


def test_another_datasets_files_are_named_as_such(tmp_path, monkeypatch):
    mnist = tmp_path / "m"
    fakedata.write_fmnist(mnist, seed=9)
    shutil.move(mnist / "FashionMNIST", mnist / "MNIST")
    fakedata.register_md5(monkeypatch, mnist)  # the catalogue's MNIST is these files
    flat = tmp_path / "flat"
    gzip_into(mnist / "MNIST" / "raw", flat)
    with pytest.raises(DatasetUnavailable, match="it is mnist's train-images-idx3-ubyte"):
        load_dataset("fmnist", flat, download=False)
    assert load_dataset("mnist", flat, download=False).train.inputs.shape[1] == 784


def test_cifar_archive_is_read_as_it_is_and_equals_the_folder(cifar10_root, tmp_path):
    root, _ = cifar10_root
    folder = load_dataset("cifar10", root, download=False)
    archive_root = tmp_path / "archive"
    archive_root.mkdir()
    with tarfile.open(archive_root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", archive_root, download=False)
    assert torch.equal(ds.train.inputs, folder.train.inputs) and torch.equal(ds.test.labels, folder.test.labels)
    assert ds.files[0]["path"] == f"{archive_root / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/data_batch_1"
    assert [f["sha256"] for f in ds.files] == [f["sha256"] for f in folder.files]
    # A member that differs is refused, as in a folder
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / "cifar-10-batches-py" / "test_batch").write_bytes(b"other")
    shutil.rmtree(archive_root)
    archive_root.mkdir()
    with tarfile.open(archive_root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(bad / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DatasetUnavailable, match="cifar-10-python.tar.gz:cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", archive_root, download=False)


def test_a_failed_download_writes_nothing_and_says_why(tmp_path, no_network):
    root = tmp_path / "fresh" / "data"
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fmnist", root, download=True)
    assert "download failed: no network: cannot resolve fashion-mnist.s3-website" in str(err.value)
    assert not (tmp_path / "fresh").exists()


def _serve_files(monkeypatch, name: str, folder: Path) -> None:
    """The dataset's download address points at a local folder (file://): a download that works."""
    pub = datafiles.PUBLISHED[name]
    monkeypatch.setitem(datafiles.PUBLISHED, name, __import__("dataclasses").replace(
        pub, urls=(folder.as_uri() + "/",)))


def test_a_download_is_verified_then_moved_into_the_data_root(fmnist_raw, tmp_path, monkeypatch):
    raw, _ = fmnist_raw
    served = tmp_path / "server"
    gzip_into(raw, served)
    _serve_files(monkeypatch, "fmnist", served)
    root = tmp_path / "root"
    rows = dataimport.download("fmnist", root)
    assert rows[0]["verified"] and not rows[0]["already"]
    assert tree(root) == ["FashionMNIST", "FashionMNIST/raw"] + [f"FashionMNIST/raw/{n}.gz" for n in sorted(IDX)]
    assert load_dataset("fmnist", root, download=False).source == str(root / "FashionMNIST" / "raw")
    # A corrupt download is refused and leaves the root as it was
    other = tmp_path / "other"
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(12)))
    refused = f"{served.as_uri()}/t10k-images-idx3-ubyte.gz is not the published file"
    with pytest.raises(datafiles.DataProblem, match=refused):
        dataimport.download("fmnist", other)
    assert not other.exists()


def test_import_a_folder_then_again_then_a_corrupt_one(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    root = tmp_path / "root"
    first = cli("data", "import", raw, "--data-root", root, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)[0]["written"]
    assert tree(root) == ["FashionMNIST", "FashionMNIST/raw"] + [f"FashionMNIST/raw/{n}" for n in sorted(IDX)]
    again = cli("data", "import", raw / "train-images-idx3-ubyte", "--data-root", root)
    assert again.exit_code == 0 and "already in" in again.output and "nothing written" in again.output
    corrupt = tmp_path / "corrupt"
    shutil.copytree(raw, corrupt)
    (corrupt / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")
    fresh = tmp_path / "fresh"
    bad = cli("data", "import", corrupt, "--data-root", fresh)
    assert bad.exit_code == 1 and "not the published file" in bad.output and not fresh.exists()
    nothing = cli("data", "import", tmp_path / "corrupt" / "..", "--data-root", fresh)
    assert nothing.exit_code == 1 and not fresh.exists()


def test_import_recognises_nothing_and_a_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = cli("data", "import", tmp_path / "notes.txt", "--data-root", tmp_path / "root")
    assert result.exit_code == 1 and "no dataset recognised" in result.output
    assert "cifar-10-python.tar.gz" in result.output and not (tmp_path / "root").exists()
    missing = cli("data", "import", tmp_path / "nope")
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_import_a_cifar_archive_keeps_it_as_published(cifar10_root, tmp_path):
    root, _ = cifar10_root
    archive = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    result = cli("data", "import", archive, "--data-root", tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert tree(tmp_path / "root") == ["cifar-10-python.tar.gz"]
    assert load_dataset("cifar10", tmp_path / "root", download=False).source.endswith("(archive)")


def test_import_an_archive_that_must_be_unpacked(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "test"):
            for sentiment in ("pos", "neg"):
                data = b"a fine film" if sentiment == "pos" else b"a dull film"
                info = tarfile.TarInfo(f"aclImdb/{split}/{sentiment}/0_7.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(buf.getvalue())
    result = cli("data", "import", archive, "--data-root", tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert "no published checksum" in result.output
    assert (tmp_path / "root" / "aclImdb" / "test" / "neg" / "0_7.txt").read_bytes() == b"a dull film"
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".harness")]


def test_data_list_and_verify(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    listing = cli("data", "list", "--json")
    rows = {r["dataset"]: r for r in json.loads(listing.output)}
    assert listing.exit_code == 0 and not rows["fmnist"]["present"]
    assert rows["fmnist"]["get"][0] == "apt-get install dataset-fashion-mnist"
    assert rows["digits"]["present"] and rows["digits"]["verified"] is None
    assert set(rows) >= {"cifar10", "cifar100", "fmnist", "mnist", "adult", "imdb", "tinyimagenet", "noise"}
    present = cli("data", "list", "--data-root", raw.parents[1])
    line = next(ln for ln in present.output.splitlines() if ln.startswith("fmnist"))
    assert "verified" in line and str(raw) in line
    ok = cli("data", "verify", "fmnist", "--data-root", raw.parents[1])
    assert ok.exit_code == 0 and "fmnist: ok (verified)" in ok.output
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03")
    bad = cli("data", "verify", "--data-root", raw.parents[1])
    assert bad.exit_code == 1 and "FAILED" in bad.output and "t10k-images-idx3-ubyte" in bad.output
    missing = cli("data", "verify", "cifar10")
    assert missing.exit_code == 1 and "cifar10 is not available" in missing.output
    unknown = cli("data", "verify", "kmnist")
    assert unknown.exit_code == 2 and "unknown dataset 'kmnist'" in unknown.output
    for sub in ("list", "verify", "import", "download"):
        assert cli("data", sub, "--help").exit_code == 0


def test_a_corrupt_gzip_is_a_one_line_problem_not_a_traceback(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    flat = tmp_path / "flat"
    gzip_into(raw, flat)
    blob = bytearray((flat / "train-images-idx3-ubyte.gz").read_bytes())
    blob[20:40] = bytes(20)  # the deflate stream broken: zlib.error, not OSError
    (flat / "train-images-idx3-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(DatasetUnavailable, match="cannot be read"):
        load_dataset("fmnist", flat, download=False)
    listing = cli("data", "list", "--data-root", flat)
    assert listing.exit_code == 0 and "cannot be read" in listing.output


def test_a_half_extracted_file_beside_its_intact_gz_does_not_hide_it(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    both = tmp_path / "both" / "FashionMNIST" / "raw"
    gzip_into(raw, both)
    (both / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:100])
    ds = load_dataset("fmnist", tmp_path / "both", download=False)
    assert ds.files[0]["path"].endswith("train-images-idx3-ubyte.gz")


def test_archives_with_dot_slash_members_and_the_extracted_folder_itself(cifar10_root, tmp_path):
    root, _ = cifar10_root
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:  # as `tar -C dir -czf x.tar.gz .` names them
        tar.add(root / "cifar-10-batches-py", arcname="./cifar-10-batches-py")
    assert load_dataset("cifar10", archive.parent, download=False).train.inputs.shape[0] == 30
    for given in (root / "cifar-10-batches-py", root / "cifar-10-batches-py" / "data_batch_1"):
        target = tmp_path / f"into-{given.name}"
        result = cli("data", "import", given, "--data-root", target)
        assert result.exit_code == 0, result.output
        assert (target / "cifar-10-batches-py" / "test_batch").is_file()


def _imdb_archive(path: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "test"):
            for sentiment in ("pos", "neg"):
                info = tarfile.TarInfo(f"aclImdb/{split}/{sentiment}/0_7.txt")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"film"))
    path.write_bytes(buf.getvalue())
    return path


def test_an_import_that_fails_midway_puts_everything_back(tmp_path):
    archive = _imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    root = tmp_path / "root"
    (root / "aclImdb" / "train" / "pos").mkdir(parents=True)
    (root / "aclImdb" / "train" / "pos" / "old.txt").write_text("old")
    (root / "aclImdb" / "test").write_text("a file where a folder goes")
    result = cli("data", "import", archive, "--data-root", root)
    assert result.exit_code == 1
    assert (root / "aclImdb" / "train" / "pos" / "old.txt").read_text() == "old"
    assert sorted(p.name for p in root.iterdir()) == ["aclImdb"]  # no staging folder left
    truncated = tmp_path / "cut" / "aclImdb_v1.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(archive.read_bytes()[:60])
    cut = cli("data", "import", truncated, "--data-root", tmp_path / "fresh")
    assert cut.exit_code == 1 and "cannot be unpacked" in cut.output and not (tmp_path / "fresh").exists()


def test_an_import_never_writes_through_a_link(tmp_path):
    archive = _imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    precious = tmp_path / "precious" / "train" / "pos"
    precious.mkdir(parents=True)
    (precious / "keep.txt").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "aclImdb").symlink_to(tmp_path / "precious")
    result = cli("data", "import", archive, "--data-root", root)
    assert result.exit_code == 1 and "is a symbolic link" in result.output
    assert (precious / "keep.txt").read_text() == "keep" and sorted(p.name for p in precious.iterdir()) == ["keep.txt"]


def test_verify_by_name_fails_when_only_another_datasets_files_are_there(fmnist_raw, tmp_path):
    raw, _ = fmnist_raw
    assert cli("data", "verify", "fmnist", "--data-root", raw.parents[1]).exit_code == 0
    mnist = cli("data", "verify", "mnist", "--data-root", raw)  # the flat layout matches MNIST's names
    assert mnist.exit_code == 1 and "mnist is not available" in mnist.output

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fakedata  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The slow tests first, in their order: pytest-xdist's workers then start the long ones
    early and end on the many quick ones, instead of one worker idling while the other finishes
    a long test it took last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, request):
    """No test reads a real data cache or the system's datasets (except those asking for
    ``real_fmnist``) or writes outside its own folder; CPU only; 2 threads, or 1 in each of
    pytest-xdist's workers (``make test`` runs two: they share the 2 cores)."""
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache-here"))
    if "real_fmnist" not in request.fixturenames:
        fakedata.hide_system_datasets(monkeypatch)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def real_fmnist():
    """The real Fashion-MNIST of Debian's dataset-fashion-mnist, as the system installs it: the
    folder of its four .gz files. Skipped where it is not installed, except where
    HARNESS_REQUIRE_FMNIST=1 (CI, which installs it): there the test fails."""
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        why = "the Fashion-MNIST package is not installed (apt-get install dataset-fashion-mnist)"
        if os.environ.get("HARNESS_REQUIRE_FMNIST") == "1":
            pytest.fail(f"HARNESS_REQUIRE_FMNIST=1 but {why}")
        pytest.skip(why)
    return folder


def sandbox_gate() -> None:
    """Skip where bubblewrap cannot start, except where HARNESS_REQUIRE_SANDBOX=1 (CI): there
    fail, so that the security tests never go unnoticed."""
    from harness.execution import sandbox

    reason = sandbox.sandbox_unavailable()
    if reason is not None:
        if os.environ.get("HARNESS_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"HARNESS_REQUIRE_SANDBOX=1 but no sandbox can start here: {reason}")
        pytest.skip(f"no sandbox here: {reason}")


@pytest.fixture
def sandbox():
    """For tests that start sandboxes (tests/hostile/, the isolation tests): see sandbox_gate."""
    sandbox_gate()


needs_sandbox = pytest.mark.usefixtures("sandbox")


@pytest.fixture
def no_network(monkeypatch):
    """Make downloads fail at once, as on a machine without network: no name resolves."""
    import socket
    import urllib.error

    from harness.data import install as dataimport

    def refuse(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(dataimport.urllib.request, "urlopen", refuse)


def _tiny_root(tmp_path, monkeypatch, writer):
    root = tmp_path / "data"
    arrays = writer(root)
    fakedata.register_md5(monkeypatch, root)
    return root, arrays


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    return _tiny_root(tmp_path, monkeypatch, fakedata.write_cifar10)


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    return _tiny_root(tmp_path, monkeypatch, fakedata.write_cifar100)


@pytest.fixture
def fmnist_root(tmp_path, monkeypatch):
    return _tiny_root(tmp_path, monkeypatch, fakedata.write_fmnist)

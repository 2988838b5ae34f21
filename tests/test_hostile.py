"""Hostile submissions (tests/hostile/): each is blocked, or its run is recorded with the right
category while the other run of the same submit completes and is recorded.

Every hostile file misbehaves only in its seed-2 run; the submit runs seeds 1 and 2 side by side
(two workers), sandboxed as `harness submit` does by default.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pytest

from conftest import ROOT
from harness.executors import Isolation
from harness.sandbox import namespaces_unavailable
from harness.store import ResultsStore
from harness.submission import SubmissionError
from harness.suites import load_suite
from harness.sweep import sweep
from harness.train import Recipe

HOSTILE = ROOT / "tests" / "hostile"
SMOKE = load_suite("smoke")
SUITE = dataclasses.replace(SMOKE, settings=SMOKE.settings[:1], seeds=(1, 2),
                            recipe=Recipe(epochs=1, batch_size=32), limit_train=96, limit_test=64)

pytestmark = pytest.mark.skipif(namespaces_unavailable() is not None,
                                reason=f"no Linux namespaces here: {namespaces_unavailable()}")


def materialise(name: str, tmp_path: Path, **values: str) -> Path:
    text = (HOSTILE / f"{name}.py").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", value)
    path = tmp_path / "src" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def submit(path: Path, results: Path, trust_code: bool = False, **isolation):
    store = ResultsStore(results)
    result = sweep(store, str(path), path.stem, "submission", SUITE, False, device="cpu", jobs=2,
                   isolation=Isolation(untrusted=True, **isolation), trust_code=trust_code)
    return store, {r["config"]["seed"]: r for r in result.ran}


def the_other_run_completed(store: ResultsStore, runs: dict) -> None:
    assert runs[1]["status"] == "ok" and runs[1]["best_acc"] is not None
    assert runs[1]["failure"] is None
    on_disk = {line["run_id"]: line["status"] for line in store.index_lines().values()}
    assert on_disk == {runs[1]["run_id"]: "ok", runs[2]["run_id"]: runs[2]["status"]}
    assert all((store.runs_dir / f"{r['run_id']}.json").exists() for r in runs.values())


# -- the static scan blocks what a norm layer has no business with, naming the line ------------

@pytest.mark.parametrize("name, line, what", [
    ("opens_socket", 2, "imports socket"),
    ("spawns_process", 2, "imports subprocess"),
    ("writes_outside", 9, "uses open"),
    ("reads_results", 2, "imports os"),
    ("patches_cross_entropy", 14, "assigns to an attribute of F"),
    ("patches_evaluate", 6, "imports harness.train"),
    ("patches_at_import", 6, "assigns to an attribute of F"),
])
def test_the_static_scan_refuses_before_anything_runs(tmp_path, name, line, what):
    path = materialise(name, tmp_path, port="1", marker="/x", results="/x")
    with pytest.raises(SubmissionError) as err:
        submit(path, tmp_path / "results")
    assert err.value.category == "refused"
    assert f"line {line}: {what}" in str(err.value) and "--trust-code" in str(err.value)
    assert not list((tmp_path / "results" / "runs").glob("*.json"))


# -- past the scan (--trust-code), the sandbox still holds ---------------------------------------

def test_no_network_even_to_this_machine(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    connections = []

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        path = materialise("opens_socket", tmp_path, port=str(server.getsockname()[1]))
        store, runs = submit(path, tmp_path / "results", trust_code=True)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert connections == []
    assert runs[2]["status"] == "failed" and runs[2]["failure"]["category"] == "exception"
    assert "Operation not permitted" in runs[2]["failure"]["message"]
    the_other_run_completed(store, runs)


@pytest.mark.parametrize("name, marker, error", [
    ("spawns_process", "spawned", "PermissionError"),  # no new processes
    ("writes_outside", "escaped.txt", "Read-only file system"),  # no writes outside its tmpfs
])
def test_no_new_processes_and_no_writes_outside(tmp_path, name, marker, error):
    marker = tmp_path / marker
    store, runs = submit(materialise(name, tmp_path, marker=str(marker)), tmp_path / "results",
                         trust_code=True)
    assert not marker.exists()
    assert runs[2]["failure"]["category"] == "exception"
    assert error in runs[2]["failure"]["message"]
    the_other_run_completed(store, runs)


def test_the_results_store_is_hidden_from_the_run(tmp_path):
    results = tmp_path / "results"
    path = materialise("reads_results", tmp_path, results=str(results))
    store, runs = submit(path, results, trust_code=True)
    assert runs[2]["failure"]["category"] == "exception"
    assert "saw 0 entries in the results store" in runs[2]["failure"]["message"]
    the_other_run_completed(store, runs)
    # Trusted, the same file sees the store: the sandbox is what hid it.
    trusted = ResultsStore(results)
    result = sweep(trusted, str(path), "reads", "submission", SUITE, False, device="cpu", jobs=2,
                   rerun=True, isolation=Isolation(untrusted=False))
    seen = next(r for r in result.ran if r["config"]["seed"] == 2)["failure"]["message"]
    assert "saw 0 entries" not in seen and "'runs'" in seen


@pytest.mark.parametrize("name, replaced", [("patches_cross_entropy", "torch.nn.functional.cross_entropy"),
                                            ("patches_evaluate", "harness.train.evaluate")])
def test_monkeypatching_during_a_run_is_refused_a_score(tmp_path, name, replaced):
    store, runs = submit(materialise(name, tmp_path), tmp_path / "results", trust_code=True)
    bad = runs[2]
    assert bad["status"] == "failed" and bad["failure"]["category"] == "tampered"
    assert replaced in bad["failure"]["message"]
    assert bad["best_acc"] is None and bad["epochs"] == []
    the_other_run_completed(store, runs)


def test_monkeypatching_at_import_is_refused_before_any_run(tmp_path):
    with pytest.raises(SubmissionError) as err:
        submit(materialise("patches_at_import", tmp_path), tmp_path / "results", trust_code=True)
    assert err.value.category == "tampered"
    assert "torch.nn.functional.cross_entropy was replaced" in str(err.value)


# -- files the scan lets through: limits and watches ---------------------------------------------

def test_a_run_that_hangs_is_killed_at_its_timeout(tmp_path):
    store, runs = submit(HOSTILE / "sleeps_forever.py", tmp_path / "results", timeout_s=25)
    assert runs[2]["failure"]["category"] == "timeout"
    assert "wall-clock limit of 25 s" in runs[2]["failure"]["message"]
    the_other_run_completed(store, runs)


def test_a_run_that_allocates_without_bound_is_stopped(tmp_path):
    store, runs = submit(HOSTILE / "allocates_unbounded.py", tmp_path / "results",
                         memory_bytes=3 << 30)
    assert runs[2]["failure"]["category"] == "out-of-memory"
    the_other_run_completed(store, runs)


def test_an_exception_on_the_third_call_is_recorded(tmp_path):
    store, runs = submit(HOSTILE / "raises_on_third_call.py", tmp_path / "results")
    assert runs[2]["failure"]["category"] == "exception"
    assert "ValueError: third call" in runs[2]["failure"]["message"]
    assert 'in forward\n    raise ValueError("third call")' in runs[2]["failure"]["traceback"]
    the_other_run_completed(store, runs)


def test_nan_after_some_steps_is_divergence(tmp_path):
    store, runs = submit(HOSTILE / "turns_nan.py", tmp_path / "results")
    assert runs[2]["status"] == "diverged" and runs[2]["failure"]["category"] == "diverged"
    assert runs[2]["failure"]["step"] == 2 and "diverged" in runs[2]["flags"]
    the_other_run_completed(store, runs)

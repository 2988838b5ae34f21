"""Hostile submissions (tests/hostile/): every attack tried against the harness, each with its
specific outcome. Untrusted runs are split (harness.execution.untrusted): a sandboxed training process without
the test set, a sandboxed scoring process without labels, and the parent, which alone scores.

Each hostile file is a BatchNorm that misbehaves in its seed-2 runs. The honest BatchNorm
(custom_norm.py) trained in this process with the same configuration gives the numbers an
honest layer gets: no attack may beat them, and where the attack leaves training alone, the
recorded numbers are exactly the honest ones (CPU runs are deterministic).
"""

from __future__ import annotations

import json
import socket
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest

from harness.engine.runner import run_eval
from harness.execution.local import LocalExecutor
from harness.execution.options import Isolation
from harness.execution.task import Task
from harness.execution.watch import LOG_BYTES
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.store.results import ResultsStore

from conftest import ROOT, needs_sandbox

HOSTILE = ROOT / "tests" / "hostile"
RECIPE = Recipe(epochs=1, batch_size=32)
SLOT = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # as torch has in this process

pytestmark = [pytest.mark.slow, needs_sandbox]  # each runs sandboxed processes


def materialise(name: str, tmp_path: Path, **values: str) -> Path:
    text = (HOSTILE / f"{name}.py").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", value)
    path = tmp_path / "src" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config(path: Path, seed: int, epochs: int = 1) -> RunSpec:
    return RunSpec(str(path), "resnet20", "digits", seed=seed,
                     recipe=Recipe(epochs=epochs, batch_size=32), limit_train=96, limit_test=64,
                     device="cpu")


def run_untrusted(path: Path, results: Path, seeds=(2,), epochs: int = 1,
                  **isolation) -> tuple[ResultsStore, dict[int, dict]]:
    """The runs of ``path`` as an untrusted submit runs them (split and sandboxed)."""
    store = ResultsStore(results)
    copy, digest = store.store_submission(path)
    tasks = [Task(config(copy, seed, epochs).with_(sha256=digest), f"{path.stem} seed {seed}",
                  {"submission_source": str(path)}) for seed in seeds]
    records = LocalExecutor(1, "cpu", Isolation(untrusted=True, **isolation)).run(
        tasks, store, slots=[SLOT] * len(seeds))
    return store, {r["config"]["seed"]: r for r in records}


@lru_cache(maxsize=None)
def honest(seed: int, epochs: int = 1) -> tuple[float, ...]:
    """The test accuracies of the honest BatchNorm, per epoch, trained in this process."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record, _ = run_eval(config(ROOT / "custom_norm.py", seed, epochs), tmp)
    return tuple(e["test_acc"] for e in record["epochs"])


def accuracies(record: dict) -> tuple[float, ...]:
    return tuple(e["test_acc"] for e in record["epochs"])


def failure(record: dict) -> tuple[str, str]:
    return record["failure"]["category"], record["failure"]["message"]


# -- no score from anything but the parent's own scoring -------------------------------------

def test_a_result_line_is_never_a_score_nor_a_way_to_another_entry(tmp_path):
    """Printing the old worker's result line (a perfect record under another entry's run id)
    gets no score, leaves the other entry's record as it was, and the board builds."""
    from harness.leaderboard.site import build_site

    from records import make_record

    victim = make_record("victim", "9" * 64, "resnet20-digits", 1, 70.0)
    victim_path = ResultsStore(tmp_path / "results").add(victim)
    before = victim_path.read_bytes()
    path = materialise("result_line", tmp_path, run_id=victim["run_id"])
    store, runs = run_untrusted(path, tmp_path / "results", seeds=(1, 2))
    assert runs[1]["status"] == "ok" and accuracies(runs[1]) == honest(1)
    assert runs[2]["status"] == "failed" and runs[2]["best_acc"] is None
    assert failure(runs[2])[0] == "crashed" and runs[2]["epochs"] == []
    assert victim_path.read_bytes() == before
    assert len(list(store.runs_dir.glob("*.json"))) == 3
    build_site(store.root, tmp_path / "site", False)


@pytest.mark.parametrize("name", ["torch_function_mode", "patches_tensor_eq", "walks_frames",
                                  "swaps_scoring"])
def test_in_process_cheats_change_nothing(tmp_path, name):
    """Each of these recorded 98-100% when the evaluation ran in the submission's process; now
    its code runs only where there is no label and no scoring: the honest numbers, exactly."""
    _, runs = run_untrusted(materialise(name, tmp_path), tmp_path / "results")
    assert runs[2]["status"] == "ok", runs[2]["failure"]
    assert accuracies(runs[2]) == honest(2)


def test_an_edited_checkpoint_never_decides_a_score(tmp_path):
    """Its checkpoint's metrics set to 100%, then killed: the resumed run's past epochs come from
    the parent's journal, and every number is the honest one."""
    path = materialise("edits_checkpoint", tmp_path)
    store, first = run_untrusted(path, tmp_path / "results", epochs=2)
    assert first[2]["status"] == "failed" and failure(first[2])[0] == "crashed"
    assert accuracies(first[2]) == honest(2, 2)[:1]  # epoch 1, scored before it died
    _, second = run_untrusted(path, tmp_path / "results", epochs=2)
    assert second[2]["status"] == "ok" and [r["from_epoch"] for r in second[2]["resumes"]] == [1]
    assert accuracies(second[2]) == honest(2, 2) and max(honest(2, 2)) < 100.0


# Each way a hand-over can be malformed, and what its record's failure says.
MALFORMED = {
    "report": "not a valid EpochReport",
    "header": "not a hand-over",
    "huge": "its weights hand-over is 999999999999 bytes",
    "weights": "the weights are not safetensors",
    "checkpoint": "a checkpoint of epoch 5 after epoch 0 was handed over",
    "end": "not a valid EndReport",
    "nested": "RecursionError",
    "median": "the scoring process answered 'logits 1 64 10 1.2.3'",
    "short": "sent 12 of 2560 bytes",
}


def test_each_malformed_handover_is_recorded_and_the_other_runs_kept(tmp_path):
    """Frames of its own in the harness's pipes, malformed each in its own way, all in one sweep
    with an honest run among them: each malformed run is recorded as malformed with the reason,
    the honest run after them as it would be, and the board builds."""
    from harness.leaderboard.site import build_site

    store = ResultsStore(tmp_path / "results")
    tasks = []
    for variant in MALFORMED:
        path = materialise("malformed_handover", tmp_path / variant, variant=variant)
        copy, digest = store.store_submission(path)
        seeds = (2, 1) if variant == "huge" else (2,)  # its seed 1 is honest: a run after failures
        tasks += [Task(config(copy, seed).with_(sha256=digest), f"{variant} seed {seed}",
                       {"submission_source": str(path), "entry": variant}) for seed in seeds]
    records = LocalExecutor(1, "cpu", Isolation(untrusted=True)).run(tasks, store, slots=[SLOT])
    runs = {(r["entry"], r["config"]["seed"]): r for r in records}
    assert runs["huge", 1]["status"] == "ok" and accuracies(runs["huge", 1]) == honest(1)
    for variant, words in MALFORMED.items():
        run = runs[variant, 2]
        assert run["status"] == "failed" and run["best_acc"] is None, variant
        category, message = failure(run)
        assert category == "malformed" and words in message, (variant, message)
    assert sorted(line["status"] for line in store.index_lines().values()) == \
        ["failed"] * len(MALFORMED) + ["ok"]
    build_site(store.root, tmp_path / "site", False)


# -- the sandbox -------------------------------------------------------------------------------

def test_nothing_of_the_host_reaches_the_record_or_the_site(tmp_path, monkeypatch):
    from harness.leaderboard.site import build_site

    monkeypatch.setenv("OPERATOR_TOKEN", "hunter2-secret")
    secret = tmp_path / "outside.txt"
    secret.write_text("the operator's private notes")
    store, runs = run_untrusted(materialise("leaks_secrets", tmp_path, secret_file=str(secret)),
                                tmp_path / "results")
    category, message = failure(runs[2])
    assert category == "exception" and "no file (FileNotFoundError)" in message
    build_site(store.root, tmp_path / "site", True)
    for folder in (store.root, tmp_path / "site"):
        for file in folder.rglob("*"):
            if file.is_file():
                text = file.read_bytes()
                assert b"hunter2" not in text and b"private notes" not in text, file


@contextmanager
def listening(server: socket.socket):
    """Accept connections on ``server`` while the block runs; yields the list of them."""
    server.listen()
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def test_no_io_uring_and_no_socket_to_the_host(tmp_path):
    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    with listening(server) as accepted:
        _, runs = run_untrusted(materialise("io_uring_socket", tmp_path, socket=str(path)),
                                tmp_path / "results")
    assert accepted == []
    message = failure(runs[2])[1]
    assert "io_uring refused (Operation not permitted)" in message
    assert "socket refused (Operation not permitted)" in message


def test_the_sandbox_sees_only_what_it_was_given(tmp_path):
    results = tmp_path / "results"
    data = tmp_path / "data"
    data.mkdir()
    (data / "test_labels.bin").write_bytes(b"labels")
    _, runs = run_untrusted(materialise("looks_around", tmp_path, results=str(results),
                                        checkout=str(ROOT), data=str(data)), results)
    seen, _ = json.JSONDecoder().raw_decode(failure(runs[2])[1].split("SEEN ", 1)[1])
    assert seen["results"] == "FileNotFoundError" and seen["data"] == "FileNotFoundError"
    assert seen["home"] in ("FileNotFoundError", [])
    assert set(seen["checkout"]) <= {"harness", ".venv"}  # the package (and its environment) only
    assert len(seen["pids"]) <= 3  # its own processes: a fresh /proc
    assert set(seen["environment"]) <= {  # what the harness sets, and what python and torch add
        "PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
        "JOBLIB_MULTIPROCESSING", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LC_CTYPE", "PWD",
        "TORCHINDUCTOR_CACHE_DIR"}


def test_threads_are_capped(tmp_path):
    _, runs = run_untrusted(materialise("starts_threads", tmp_path), tmp_path / "results")
    category, message = failure(runs[2])
    started = int(message.split("started ")[1].split()[0])
    assert category == "exception" and 0 < started < 100  # the cap: 64 + 4 per thread of torch's
    assert runs[2]["peak_threads"] < 300


@pytest.mark.parametrize("folder, quota", [("/state", 64 << 20), ("/scratch", 1 << 30)])
def test_the_writable_space_is_held_by_the_kernel(tmp_path, folder, quota):
    """Writing past its size fails inside the sandbox (tmpfs): nothing is polled, nothing of the
    host fills up, and the run is recorded with the layer's own error."""
    _, runs = run_untrusted(materialise("fills_state", tmp_path, folder=folder), tmp_path / "results",
                            disk_quota_bytes=64 << 20)
    category, message = failure(runs[2])
    assert category == "exception" and "No space left on device" in message, message
    assert int(message.split("wrote ")[1].split()[0]) <= quota


@pytest.mark.parametrize("folder, inodes", [("/state", "STATE_INODES"), ("/scratch", "SCRATCH_INODES"),
                                            ("/dev/shm", "SHM_INODES")])
def test_inodes_are_held_by_the_kernel_too(tmp_path, folder, inodes):
    """Directories and empty files take no data blocks: the kernel's inode limit stops them."""
    from harness.execution import sandbox

    _, runs = run_untrusted(materialise("fills_inodes", tmp_path, folder=folder), tmp_path / "results",
                            disk_quota_bytes=64 << 20)
    category, message = failure(runs[2])
    assert category == "exception" and "No space left on device" in message, message
    assert int(message.split("made ")[1].split()[0]) < getattr(sandbox, inodes)


def test_leaving_the_session_does_not_leave_the_memory_watch(tmp_path):
    _, runs = run_untrusted(materialise("setsid_hoards", tmp_path), tmp_path / "results",
                            memory_bytes=1 << 30)
    category, message = failure(runs[2])
    assert category == "out-of-memory" and "1.0 GiB" in message, message


def test_floods_of_output_are_cut(tmp_path):
    store, runs = run_untrusted(materialise("floods_output", tmp_path), tmp_path / "results")
    assert failure(runs[2])[0] == "exception" and "flooded" in failure(runs[2])[1]
    (log,) = [p for p in store.root.joinpath("logs").glob("*.log") if not p.name.endswith(".score.log")]
    assert log.stat().st_size <= LOG_BYTES + 4096
    text = log.read_text()
    assert "[harness: line cut, " in text and "bytes of output not kept]" in text


# -- the batch check ---------------------------------------------------------------------------

def test_batch_statistics_beyond_the_checked_sizes_are_flagged(tmp_path):
    """Batch statistics only for batches of more than 8: the pre-flight check (batches of 1 and
    8) passes it; the scoring's own check (other batches of the run's size) does not."""
    from harness.vetting.check import run_checks

    path = materialise("batch_stats_for_large_batches", tmp_path)
    row = next(r for r in run_checks(str(path)).rows if r.name == "eval-batch-independent")
    assert row.status == "pass"
    _, runs = run_untrusted(path, tmp_path / "results")
    assert "batch-dependent" in runs[2]["flags"]
    assert runs[2]["evaluation"]["max_change"] > runs[2]["evaluation"]["tolerance"]


def test_a_memory_of_the_protocol_batches_cannot_hide_batch_statistics(tmp_path):
    """A layer that uses test-batch statistics and remembers what it answered for each image:
    where one process scores both batchings (a trusted run), its memory makes them agree and
    the check sees nothing; a sandboxed run's check batches are scored by a process of their
    own, which never saw the protocol batches, and the run is flagged."""
    path = materialise("remembers_outputs", tmp_path)
    trusted, _ = run_eval(config(path, 2), tmp_path / "trusted")
    assert "batch-dependent" not in trusted["flags"]  # the evasion, where it works
    assert trusted["evaluation"]["max_change"] == 0.0
    _, runs = run_untrusted(path, tmp_path / "results")
    assert "batch-dependent" in runs[2]["flags"]
    assert runs[2]["evaluation"]["max_change"] > runs[2]["evaluation"]["tolerance"]


# -- limits and failures the sandbox reports -----------------------------------------------------

@pytest.mark.parametrize("name, category, words", [
    ("spawns_process", "exception", "PermissionError"),  # no new processes
    ("writes_outside", "exception", "No such file or directory"),  # the host's /tmp is not there
    ("raises_on_third_call", "exception", "ValueError: third call"),
])
def test_what_the_layer_cannot_do_is_recorded(tmp_path, name, category, words):
    marker = tmp_path / "marker"
    _, runs = run_untrusted(materialise(name, tmp_path, marker=str(marker)), tmp_path / "results")
    assert failure(runs[2])[0] == category and words in failure(runs[2])[1]
    assert f"(at {name}.py:" in failure(runs[2])[1]  # the user's file and line, not the sandbox's
    assert not marker.exists()


def test_a_file_in_the_reference_format_passes_the_default_submit(tmp_path):
    """Its fixed header imports os, argparse, json, math, random, time, numpy, torchvision: the
    default submit (untrusted, --scan-policy report) vets and runs it; even --scan-policy refuse
    would (its findings are notes: unused imports, code only its own script calls)."""
    import dataclasses

    from harness.execution.options import Execution
    from harness.execution.sweep import SweepEntry, sweep
    from harness.protocol.suites import load_suite
    from harness.vetting.vet import Vetting, scan_row

    from conftest import FIXTURES

    smoke = load_suite("smoke")
    suite = dataclasses.replace(smoke, settings=smoke.settings[:1], seeds=(1,), recipe=RECIPE,
                                limit_train=96, limit_test=64)
    isolation = Isolation(untrusted=True)
    result = sweep(ResultsStore(tmp_path / "results"),
                   SweepEntry(str(FIXTURES / "reference_format.py"), "reference", "submission", suite),
                   Execution(device="cpu", isolation=isolation),
                   executor=LocalExecutor(1, "cpu", isolation, threads=1))
    (record,) = result.ran
    assert record["status"] == "ok" and record["isolation"]["sandboxed"]
    assert record["environment"]["torch_threads"] == 1  # the sandboxed trainer's, not this process's
    assert [f["severity"] for f in record["scan"]["findings"]] == ["note", "note"]
    row, _ = scan_row(FIXTURES / "reference_format.py", "reference_format.py", Vetting("refuse"))
    assert row["status"] == "pass"


def test_no_network_even_to_this_machine(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = str(server.getsockname()[1])
    with listening(server) as accepted:
        _, runs = run_untrusted(materialise("opens_socket", tmp_path, port=port),
                                tmp_path / "results")
    assert accepted == [] and "Operation not permitted" in failure(runs[2])[1]


def test_a_run_that_hangs_is_killed_at_its_timeout(tmp_path):
    _, runs = run_untrusted(HOSTILE / "sleeps_forever.py", tmp_path / "results", timeout_s=8)
    assert failure(runs[2]) == ("timeout", "killed: the wall-clock limit of 8 s")


def test_nan_after_some_steps_is_divergence(tmp_path):
    _, runs = run_untrusted(HOSTILE / "turns_nan.py", tmp_path / "results")
    assert runs[2]["status"] == "diverged" and runs[2]["failure"]["step"] == 2
    assert "diverged" in runs[2]["flags"] and runs[2]["failure"]["reported"]


# -- what a sandbox leaves behind ----------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple]:
    """Owner, mode and content of everything under ``folder`` (itself included), links unfollowed."""
    import hashlib
    import os

    out = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = os.lstat(path)
        content = (os.readlink(path) if path.is_symlink() else
                   hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
        out[str(path.relative_to(folder))] = (st.st_uid, st.st_gid, st.st_mode, content)
    return out


def canary_folder(tmp_path: Path) -> Path:
    canary = tmp_path / "canary"
    canary.mkdir()
    canary.chmod(0o700)
    for name, text in (("notes.txt", "the operator's notes"),
                       (".hidden", "dot file"), ("labels.bin", "0123456789")):
        (canary / name).write_text(text)
    return canary


def test_links_left_in_the_sandbox_are_never_followed(tmp_path):
    """Symbolic links planted where the sandbox writes, then a death, then the (default) resumed
    attempt: no host file is deleted, re-owned, read or given to a sandbox, and every attempt
    ends in a record without a score above the honest layer's."""
    canary = canary_folder(tmp_path)
    before = snapshot(canary)
    path = materialise("links_state", tmp_path, canary=str(canary))
    store, first = run_untrusted(path, tmp_path / "results", epochs=2)
    _, second = run_untrusted(path, tmp_path / "results", epochs=2)
    assert snapshot(canary) == before
    for record in (first[2], second[2]):
        assert record["status"] == "failed" and failure(record)[0] == "crashed"
        assert all(a <= max(honest(2, 2)) for a in accuracies(record))
        assert "operator's notes" not in json.dumps(record)
    assert len(list(store.runs_dir.glob("*.json"))) == 2

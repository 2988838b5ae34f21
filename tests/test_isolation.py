"""Isolation of runs: the parent's watch (timeout, memory), the records it writes, the tamper check,
the sandbox's pieces, and the command line's summary and exit codes."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import FIXTURES, ROOT
from harness import tamper
from harness.cli import EXIT_DIVERGED, main
from harness.executors import (Isolation, Task, WorkerOutcome, _failure_of, accept_record,
                               run_worker_process)
from harness.runner import RunConfig, failure_category
from harness.sandbox import _ARCH, namespaces_unavailable, seccomp_program
from harness.suites import load_suite
from harness.train import Recipe
from harness.worker import RESULT_MARKER
from records import make_record

HOSTILE = ROOT / "tests" / "hostile"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_worker_watch_kills_at_the_timeout(tmp_path):
    out = run_worker_process(py("import time; print('started', flush=True); time.sleep(60)"), {},
                             tmp_path / "log", timeout_s=1.5, memory_bytes=None)
    assert out.killed_for == "timeout" and out.returncode == -signal.SIGKILL and out.result is None
    assert "started" in out.log_tail()


def test_the_worker_watch_kills_the_whole_session_at_the_memory_limit(tmp_path):
    # The memory is held by a grandchild: the watch counts the worker's whole session.
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'x = bytearray(600 << 20); import time; time.sleep(60)'])")
    out = run_worker_process(py(code), {}, tmp_path / "log", timeout_s=60, memory_bytes=300 << 20)
    assert out.killed_for == "out-of-memory" and out.peak_rss > 300 << 20
    category, message = _failure_of(out, Isolation(), 300 << 20)
    assert category == "out-of-memory" and "0.3 GiB" in message


def test_the_result_line_is_taken_and_everything_else_logged(tmp_path):
    code = f"print('hello'); print({RESULT_MARKER!r} + '{{\"record\": 1}}')"
    out = run_worker_process(py(code), {}, tmp_path / "log", None, None)
    assert out.result == {"record": 1} and out.returncode == 0
    assert out.log_tail() == "hello\n"


@pytest.mark.parametrize("code, killed, category", [(-signal.SIGXCPU, None, "timeout"),
                                                    (-signal.SIGKILL, None, "crashed"),
                                                    (3, None, "crashed")])
def test_categories_of_a_worker_that_ended_without_a_word(tmp_path, code, killed, category):
    (tmp_path / "log").write_text("last words\n")
    outcome = WorkerOutcome(None, code, killed, tmp_path / "log")
    got, message = _failure_of(outcome, Isolation(), 1 << 30)
    assert got == category and "last words" in message


@pytest.mark.parametrize("exc, category", [
    (MemoryError(), "out-of-memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"),
     "out-of-memory"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "out-of-memory"),
    (ValueError("third call"), "exception")])
def test_failure_categories_of_exceptions(exc, category):
    assert failure_category(exc) == category


def task_for(record: dict) -> Task:
    config = RunConfig("/store/abc.py", "resnet20", "digits", seed=record["config"]["seed"],
                       recipe=Recipe(epochs=3))
    return Task(config, "x", "f" * 64, {"entry": "e", "entry_kind": "submission"},
                [{"name": "static-scan", "status": "pass", "detail": "", "fatal": False}])


def test_the_parent_recomputes_the_scores_and_owns_its_fields():
    reported = make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)
    reported["best_acc"], reported["final_acc"] = 100.0, 100.0  # claimed, not what the epochs say
    reported["submission"]["sha256"] = "0" * 64
    record = accept_record(task_for(reported), reported)
    assert record["best_acc"] == 80.0 and record["best_epoch"] == 3
    assert record["submission"]["sha256"] == "f" * 64 and record["submission"]["path"] == "/store/abc.py"
    assert record["checks"][0]["name"] == "static-scan" and record["config"]["epochs"] == 3


@pytest.mark.parametrize("spoil", [
    lambda r: r.update(run_id="../../escape"),
    lambda r: r.update(status="excellent"),
    lambda r: r["epochs"][0].update(test_acc=250.0),
    lambda r: r["epochs"][1].update(epoch=7),
    lambda r: r.pop("config"),
])
def test_a_malformed_report_is_never_a_result(spoil):
    reported = make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)
    spoil(reported)
    record = accept_record(task_for(make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)), reported)
    assert record["status"] == "failed" and record["best_acc"] is None
    assert "malformed" in record["failure"]["message"]


def test_tamper_check_sees_replacements_and_global_hooks(monkeypatch):
    tamper.baseline()
    assert tamper.changes() == []
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: 0)
    assert tamper.changes() == ["torch.nn.functional.cross_entropy was replaced or modified"]
    monkeypatch.undo()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        assert any("global hook" in c for c in tamper.changes())
    finally:
        handle.remove()
    assert tamper.changes() == []


def test_a_layer_that_patches_during_training_keeps_no_score(tmp_path):
    # In this process (trusted path): the run is recorded as tampered, without accuracies.
    from harness.runner import run_eval

    src = tmp_path / "patcher.py"
    src.write_text((HOSTILE / "patches_cross_entropy.py").read_text())
    config = RunConfig(str(src), "resnet20", "digits", seed=2, recipe=Recipe(epochs=1, batch_size=32),
                       limit_train=64, limit_test=32, device="cpu")
    original = torch.nn.functional.cross_entropy
    try:
        record, _ = run_eval(config, tmp_path)
    finally:
        torch.nn.functional.cross_entropy = original
    assert record["status"] == "failed" and record["failure"]["category"] == "tampered"
    assert record["best_acc"] is None and record["epochs"] == []


@pytest.mark.parametrize("machine", sorted(_ARCH))
def test_seccomp_program_is_well_formed(machine):
    prog = seccomp_program(machine)
    assert len(prog) < 256
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    assert prog[-1][0] == 0x06  # ends in a return


@pytest.mark.skipif(namespaces_unavailable() is not None, reason="no Linux namespaces here")
def test_the_sandbox_holds_a_plain_python_process(tmp_path):
    """The sandbox on its own, without the harness around it: what the worker gets."""
    import json
    import subprocess

    from harness.sandbox import Policy, command

    results = tmp_path / "results"
    results.mkdir()
    (results / "secret.json").write_text("{}")
    private = tmp_path / "private"
    private.mkdir()
    policy = Policy(private_dir=str(private), hide=[str(results)], memory_bytes=1 << 30,
                    cpu_seconds=60)
    probe = f"""
import json, os, socket, subprocess, sys
from harness.sandbox import Policy, enter
enter(Policy(**{policy.to_json()!r}), "cpu")
out = {{"cwd": os.getcwd(), "results": os.listdir({str(results)!r})}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = exc.strerror
attempt("socket", lambda: socket.socket())
attempt("exec", lambda: subprocess.run(["true"]))
attempt("fork", lambda: os.fork() or None)
attempt("write_outside", lambda: open({str(tmp_path / "x")!r}, "w"))
attempt("write_private", lambda: open("ok.txt", "w").write("fine"))
import threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
out["thread"] = "allowed"
print(json.dumps(out))
"""
    proc = subprocess.run(command(policy, [sys.executable, "-c", probe]), capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cwd"] == str(private) and out["results"] == []
    assert out["socket"] == out["exec"] == out["fork"] == "Operation not permitted"
    assert out["write_outside"] == "Read-only file system"
    assert out["write_private"] == "allowed" and out["thread"] == "allowed"
    assert not (tmp_path / "x").exists() and not list(private.iterdir())  # tmpfs: gone with it


@pytest.mark.slow
def test_submit_summarises_failures_and_exits_by_the_worst(tmp_path, monkeypatch):
    smoke = load_suite("smoke")
    tiny = dataclasses.replace(smoke, settings=smoke.settings[:1], seeds=(1, 2),
                               recipe=Recipe(epochs=1, batch_size=32), limit_train=96, limit_test=64)
    monkeypatch.setattr("harness.suites.load_suite", lambda name: tiny)
    runner = CliRunner()
    args = ["--suite", "tiny", "--device", "cpu", "--jobs", "2", "--out", str(tmp_path)]
    nan = runner.invoke(main, ["submit", str(HOSTILE / "turns_nan.py"), "--name", "nan", *args])
    assert nan.exit_code == EXIT_DIVERGED, nan.output
    assert "1 ok, 1 diverged, 0 failed" in nan.output and "failures by category: diverged 1" in nan.output
    raises = runner.invoke(main, ["submit", str(HOSTILE / "raises_on_third_call.py"), "--name", "r",
                                  *args])
    assert raises.exit_code == 1
    assert "failures by category: exception 1" in raises.output
    assert "exception: resnet20-digits seed 2: ValueError: third call" in raises.output
    refused = runner.invoke(main, ["submit", str(FIXTURES / "dies_in_worker.py"), "--name", "d", *args])
    assert refused.exit_code == 1 and "refused by the static scan" in refused.output
    assert "line 7: imports os" in refused.output


@pytest.mark.skipif(namespaces_unavailable() is not None, reason="no Linux namespaces here")
def test_eval_untrusted_runs_sandboxed_and_the_parent_writes_the_record(tmp_path):
    result = CliRunner().invoke(main, [
        "eval", str(ROOT / "custom_norm.py"), "--arch", "resnet20", "--dataset", "digits",
        "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--device", "cpu",
        "--untrusted", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "TEST_METRICS: test_acc=" in result.output
    (path,) = (tmp_path / "runs").glob("*.json")
    import json

    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["checks"][0]["name"] == "static-scan"
    assert record["submission"]["path"].startswith(str(tmp_path / "submissions"))
    assert not list(tmp_path.glob("checkpoints/sandboxed/*"))  # its folder went with the record


def test_untrusted_is_refused_where_namespaces_are_unavailable(tmp_path, monkeypatch):
    from harness.runner import RunError
    from harness.store import ResultsStore
    from harness.sweep import sweep

    monkeypatch.setattr("harness.sweep.namespaces_unavailable", lambda: "no unshare here")
    with pytest.raises(RunError, match="no unshare here.*--unsafe-no-namespaces"):
        sweep(ResultsStore(tmp_path), str(ROOT / "custom_norm.py"), "x", "submission",
              load_suite("smoke"), False, isolation=Isolation(untrusted=True))
    assert not list(tmp_path.glob("runs/*.json"))


def test_without_namespaces_the_limits_and_the_filter_still_apply(tmp_path):
    """--unsafe-no-namespaces: no unshare, but still no sockets, no processes, limited files."""
    import json
    import subprocess

    from harness.sandbox import OPEN_FILES, Policy

    policy = Policy(private_dir=str(tmp_path), namespaces=False, cpu_seconds=100)
    probe = f"""
import json, resource, socket, subprocess
from harness.sandbox import Policy, enter
notes = enter(Policy(**{policy.to_json()!r}), "cpu")
out = {{"notes": notes, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0]}}
for name, fn in (("socket", socket.socket), ("exec", lambda: subprocess.run(["true"]))):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = exc.strerror
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["socket"] == out["exec"] == "Operation not permitted"
    assert out["nofile"] == OPEN_FILES and out["cpu"] == 100
    assert "no namespaces" in out["notes"][0]


@pytest.mark.skipif(namespaces_unavailable() is not None, reason="no Linux namespaces here")
def test_a_sandboxed_run_resumes_from_its_own_checkpoint_folder(tmp_path):
    from harness.checkpoint import Checkpoint
    from harness.executors import run_in_worker, sandbox_checkpoint_dir
    from harness.runner import run_eval
    from harness.store import ResultsStore

    store = ResultsStore(tmp_path / "results")
    copy, digest = store.store_submission(ROOT / "custom_norm.py")
    config = RunConfig(str(copy), "resnet20", "digits", seed=3, recipe=Recipe(epochs=2, batch_size=32),
                       limit_train=64, limit_test=32, device="cpu")

    def stop_at_epoch_2(e):
        if e.epoch == 2:
            raise KeyboardInterrupt  # as a kill after epoch 1's checkpoint leaves it

    with pytest.raises(KeyboardInterrupt):
        run_eval(config, tmp_path / "elsewhere", on_epoch=stop_at_epoch_2)
    (left,) = (tmp_path / "elsewhere" / "checkpoints").glob("*.pt")
    task = Task(config, "resume-me", digest, {}, [])
    folder = sandbox_checkpoint_dir(store, task)
    folder.mkdir(parents=True)
    left.rename(folder / left.name)

    record = run_in_worker(task, store, {"OMP_NUM_THREADS": "1"}, tmp_path, 0,
                           Isolation(untrusted=True))
    assert record["status"] == "ok" and record["epochs_completed"] == 2, record.get("failure")
    assert [r["from_epoch"] for r in record["resumes"]] == [1]
    (log,) = tmp_path.glob("*.log")
    assert "resuming from the checkpoint of epoch 1" in log.read_text()
    assert "epoch   1/2" not in log.read_text() and "epoch   2/2" in log.read_text()
    assert not folder.exists()  # removed with the record written
    assert Checkpoint.for_run(store.root, left.stem).load() is None

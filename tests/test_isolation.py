"""Isolation of runs: the parent's watch (time, memory, output), the records it writes, the
tamper check of trusted runs, the sandbox's pieces, and the command line's summary and exit
codes. Hostile files against the whole of it are in test_hostile.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli import EXIT_DIVERGED, main
from harness.engine.runner import failure_category
from harness.execution.local import accept_record, failure_of
from harness.execution.options import Isolation
from harness.execution.sandbox import NOBODY, Sandbox, SandboxLimits, root_userns
from harness.execution.seccomp import REFUSED, SCORER_REFUSED, SYSCALLS, scorer_program, seccomp_program
from harness.execution.task import Task
from harness.execution.watch import LINE_BYTES, LOG_BYTES, CappedLog, Process, Watch, WatchLimits
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.protocol.suites import load_suite
from harness.vetting import tamper

from conftest import FIXTURES, ROOT, needs_sandbox
from records import make_record

HOSTILE = ROOT / "tests" / "hostile"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def watched(argv, tmp_path, **limits) -> tuple[Watch, int, CappedLog]:
    log = CappedLog(tmp_path / "log")
    watch = Watch(WatchLimits(**limits))
    process = watch.add(Process(argv, {}, log, sandboxed=False))
    code = process.wait()
    watch.stop()
    return watch, code, log


def test_the_watch_kills_at_the_timeout(tmp_path):
    watch, code, log = watched(py("import time; print('started', flush=True); time.sleep(60)"),
                               tmp_path, timeout_s=1.5)
    assert watch.killed_for == "timeout" and code == -signal.SIGKILL
    assert "started" in log.tail()


@pytest.mark.slow
def test_the_watch_kills_a_trusted_workers_whole_session_at_the_memory_limit(tmp_path):
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'x = bytearray(600 << 20); import time; time.sleep(60)'])")
    watch, _, log = watched(py(code), tmp_path, timeout_s=60, memory_bytes=300 << 20)
    assert watch.killed_for == "out-of-memory" and watch.peak_rss > 300 << 20
    category, message = failure_of(watch, -9, log)
    assert category == "out-of-memory" and "0.3 GiB" in message


@pytest.mark.slow
def test_output_is_logged_cut_and_never_parsed(tmp_path):
    """64 MB in one line, then the old result line, then 12 MB of lines: the parent keeps at most
    a line in memory, cuts the log, and takes nothing of it as a result."""
    import tracemalloc

    code = ("import sys; w = sys.stdout.write; w('x' * (64 << 20)); "
            "w('\\n@@harness-result@@ {\"record\": 1}\\n'); "
            "[w(('y' * 1023 + '\\n') * 1024) for _ in range(12)]")
    tracemalloc.start()
    _, code_, log = watched(py(code), tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code_ == 0 and peak < 8 << 20
    text = log.path.read_text()
    assert log.path.stat().st_size <= LOG_BYTES + 200
    first = text.splitlines()[0]
    assert first.startswith("x" * 100) and len(first) < LINE_BYTES + 100
    assert f"line cut, {(64 << 20) - LINE_BYTES} more bytes" in first
    assert '@@harness-result@@ {"record": 1}' in text  # logged as text, and nothing more
    assert text.endswith("bytes of output not kept]\n")


def test_terminal_escapes_never_reach_the_terminal_or_the_log(tmp_path):
    """A sandbox's lines are echoed to the user's terminal: ESC sequences (clear the screen, set
    the clipboard with OSC 52, rewrite a line with CR) are shown as text, in the log too."""
    echoed = []
    log = CappedLog(tmp_path / "log", echo=echoed.append)
    r, w = os.pipe()
    os.write(w, "clear\x1b[2J, clip\x1b]52;c;aGk=\x07 back\rover \x9b1m \u00e9\ttab\n".encode())
    os.close(w)
    log.pump(r)
    (line,) = echoed
    assert line == "clear\\x1b[2J, clip\\x1b]52;c;aGk=\\x07 back\\x0dover \\x9b1m \u00e9\ttab"
    assert log.path.read_text() == line + "\n"


@pytest.mark.parametrize("code, category", [(-signal.SIGXCPU, "timeout"), (-signal.SIGKILL, "crashed"),
                                            (3, "crashed")])
def test_categories_of_a_worker_that_ended_without_a_word(tmp_path, code, category):
    (tmp_path / "log").write_text("last words\n")
    watch = Watch(WatchLimits())
    watch.stop()
    got, message = failure_of(watch, code, CappedLog(tmp_path / "log"))
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
    config = RunSpec("/store/abc.py", "resnet20", "digits", seed=record["config"]["seed"],
                       recipe=Recipe(epochs=3))
    return Task(config.with_(sha256="f" * 64), "x", {"entry": "e", "entry_kind": "submission"},
                [{"name": "static-scan", "status": "pass", "detail": "", "fatal": False}])


def test_the_parent_recomputes_a_trusted_workers_scores_and_owns_its_fields():
    reported = make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)
    reported["best_acc"], reported["final_acc"] = 100.0, 100.0  # claimed, not what the epochs say
    reported["submission"]["sha256"] = "0" * 64
    record = accept_record(task_for(reported), reported)
    assert record["best_acc"] == 80.0 and record["best_epoch"] == 3
    assert record["submission"]["sha256"] == "f" * 64 and record["submission"]["path"] == "/store/abc.py"
    assert record["checks"][0]["name"] == "static-scan" and record["config"]["epochs"] == 3


@pytest.mark.parametrize("spoil", [
    lambda r: r.update(status="excellent"),
    lambda r: r["epochs"][0].update(test_acc=250.0),
    lambda r: r["epochs"][1].update(epoch="seven"),
    lambda r: r.pop("config"),
])
def test_a_malformed_report_is_never_a_result(spoil):
    reported = make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)
    spoil(reported)
    record = accept_record(task_for(make_record("e", "1" * 64, "resnet20-digits", 0, 80.0)), reported)
    assert record["status"] == "failed" and record["best_acc"] is None
    assert record["failure"]["category"] == "malformed"


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


@pytest.mark.parametrize("target", ["harness.engine.train:evaluate", "harness.engine.resident:evaluate",
                                    "harness.engine.train:train_epoch", "harness.engine.train:draw_epoch",
                                    "harness.engine.runner:train_recorded",
                                    "harness.engine.train:TrainingState.load_state_dict"])
def test_the_steps_split_out_of_the_loop_are_watched_too(monkeypatch, target):
    """Every function and method of the modules a score flows through, and every name they import
    and call, is watched, so that a step split out of train() or run_eval() (into another module
    too) cannot be replaced unseen."""
    import importlib

    tamper.baseline()
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    monkeypatch.setattr(owner, name, lambda *a, **k: None)  # defined here, not in the harness
    assert tamper.changes() == [f"{target.replace(':', '.')} was replaced or modified"]
    monkeypatch.undo()
    assert tamper.changes() == []


def test_a_trusted_layer_that_patches_during_training_keeps_no_score(tmp_path):
    from harness.engine.runner import run_eval

    config = RunSpec(str(FIXTURES / "patches_cross_entropy.py"), "resnet20", "digits", seed=2,
                       recipe=Recipe(epochs=1, batch_size=32), limit_train=64, limit_test=32,
                       device="cpu")
    original = torch.nn.functional.cross_entropy
    try:
        record, _ = run_eval(config, tmp_path)
    finally:
        torch.nn.functional.cross_entropy = original
    assert record["status"] == "failed" and record["failure"]["category"] == "tampered"
    assert record["best_acc"] is None and record["epochs"] == []


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
@pytest.mark.parametrize("program", [seccomp_program, scorer_program])
def test_seccomp_program_is_well_formed(machine, program):
    prog = program(machine)
    assert len(prog) < 256
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    assert prog[-1][0] == 0x06  # ends in a return


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
def test_syscall_numbers_are_the_kernels(machine):
    """Checked against libseccomp's tables where it is installed (it is on Debian)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("seccomp")
    if name is None:
        pytest.skip("libseccomp is not installed")
    lib = ctypes.CDLL(name)
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    arch, numbers = SYSCALLS[machine]
    for call in [*REFUSED, *SCORER_REFUSED, "clone", "clone3", "fcntl"]:
        number = lib.seccomp_syscall_resolve_name_arch(arch, call.encode())
        assert numbers.get(call) == (number if number >= 0 else None), call


# What every probe does first: enter the sandbox's limits (argv[1]), then try things into ``out``.
ENTERED = """
import ctypes, fcntl, json, os, resource, socket, struct, subprocess, sys, threading, time
from harness.execution.confine import enter
from harness.execution.sandbox import SandboxLimits
enter(SandboxLimits(**json.loads(sys.argv[1])), "cpu")
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = exc.strerror
"""
PROBE = ENTERED + """
out.update({"uid": os.getuid(), "cwd": os.getcwd(), "pids": [p for p in os.listdir("/proc") if p.isdigit()],
            "results": os.path.exists(sys.argv[2]), "checkout": sorted(os.listdir(sys.argv[3]))})
def io_uring():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(425, 8, ctypes.create_string_buffer(120)) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def memfd():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.memfd_create(b"x", 0) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("socket", lambda: socket.socket())
attempt("exec", lambda: subprocess.run(["true"]))
attempt("fork", lambda: os.fork() or None)
attempt("io_uring", io_uring)
attempt("memfd", memfd)
attempt("write_usr", lambda: open("/usr/x", "w"))
attempt("write_scratch", lambda: open("ok.txt", "w").write("fine"))
attempt("write_state", lambda: open("/state/ok.txt", "w").write("fine"))
attempt("write_root", lambda: open("/x", "w"))
attempt("write_dev", lambda: open("/dev/x", "w"))
attempt("chmod_hidden", lambda: os.chmod(sys.argv[4], 0o777) if sys.argv[4] else None)
attempt("flock", lambda: fcntl.flock(open("/usr/bin/env", "rb"), fcntl.LOCK_SH))
def remount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/state", b"tmpfs", 0, b"nr_inodes=0") < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("mount", remount)
out["caps"] = {l.split(":")[0]: int(l.split(":")[1], 16) for l in open("/proc/self/status")
               if l.startswith("Cap")}
out["tmpfs"] = {l.split()[4]: l.split()[-1] for l in open("/proc/self/mountinfo") if " - tmpfs harness " in l}
started = 0
try:
    for _ in range(500):
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
out["threads"] = started
print(json.dumps(out))
"""


@pytest.mark.slow
@needs_sandbox
def test_the_sandbox_holds_a_plain_python_process(tmp_path):
    """The sandbox on its own, without the harness around it: what every sandboxed worker gets."""
    import os

    from harness.execution.sandbox import (
        SCRATCH_BYTES,
        SCRATCH_INODES,
        SHM_BYTES,
        SHM_INODES,
        STATE_INODES,
        _hidden_data,
    )

    results = tmp_path / "results"
    results.mkdir()
    inputs = Path(tempfile.mkdtemp())
    inputs.chmod(0o755)
    limits = SandboxLimits(memory_bytes=1 << 30, cpu_seconds=60, max_threads=64,
                       drop_to=NOBODY if os.geteuid() == 0 else None, state_bytes=8 << 20)
    box = Sandbox(inputs=str(inputs), limits=limits)
    hidden = next(iter(_hidden_data()), "")  # scikit-learn's bundled datasets, hidden by a tmpfs
    fd = root_userns() if os.geteuid() == 0 else None
    try:
        proc = subprocess.run(box.command(py(PROBE) + [json.dumps(limits.to_json()), str(results),
                                                        str(ROOT), hidden], fd),
                              capture_output=True, text=True, timeout=120,
                              pass_fds=(fd,) if fd is not None else ())
    finally:
        if fd is not None:
            os.close(fd)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == (NOBODY if os.geteuid() == 0 else os.getuid())
    assert out["cwd"] == "/scratch" and len(out["pids"]) <= 3 and out["results"] is False
    assert set(out["checkout"]) <= {"harness", ".venv"}
    for call in ("socket", "exec", "fork", "io_uring", "memfd"):
        assert out[call] == "Operation not permitted", call
    assert out["write_usr"] == "Read-only file system" and out["write_scratch"] == "allowed"
    assert 0 < out["threads"] < 64
    # Its writable space: tmpfs the kernel holds in bytes and inodes, mounted before the
    # capability to mount (CAP_SYS_ADMIN, in its own user namespace) was given up with the rest.
    assert out["write_state"] == "allowed" and out["mount"] == "Operation not permitted"
    # bubblewrap's own root, /dev and the folders it hides are not writable, whoever runs it.
    assert out["write_root"] == out["write_dev"] == "Read-only file system"
    assert out["chmod_hidden"] == ("Read-only file system" if hidden else "allowed")
    assert out["flock"] == "allowed"  # a training process may lock (torch.compile's cache does)
    assert set(out["caps"].values()) == {0}, out["caps"]  # effective, permitted, ambient, ...
    assert {path: {o.split("=")[0]: o.split("=")[1] for o in opts.split(",") if "=" in o}
            for path, opts in out["tmpfs"].items()} == {
        "/scratch": {"size": f"{SCRATCH_BYTES >> 10}k", "nr_inodes": str(SCRATCH_INODES), "mode": "700",
                     "uid": str(out["uid"]), "gid": str(out["uid"])},
        "/dev/shm": {"size": f"{SHM_BYTES >> 10}k", "nr_inodes": str(SHM_INODES),
                     "uid": str(out["uid"]), "gid": str(out["uid"])},
        "/state": {"size": "8192k", "nr_inodes": str(STATE_INODES), "mode": "700",
                   "uid": str(out["uid"]), "gid": str(out["uid"])}}


SCORER_PROBE = ENTERED + """
f = open("/usr/bin/env", "rb")
def inotify():
    if ctypes.CDLL(None, use_errno=True).inotify_init1(0) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
attempt("flock", lambda: fcntl.flock(f, fcntl.LOCK_SH))
attempt("lockf", lambda: fcntl.lockf(f, fcntl.LOCK_SH))
attempt("getlk", lambda: fcntl.fcntl(f, fcntl.F_GETLK, struct.pack("hhqqi", fcntl.F_RDLCK, 0, 0, 0, 0)))
attempt("inotify", inotify)
attempt("getfd", lambda: fcntl.fcntl(f, fcntl.F_GETFD))
print(json.dumps(out))
"""


@pytest.mark.slow
@needs_sandbox
def test_a_scoring_process_cannot_signal_through_a_file(tmp_path):
    """The batch check's process and the protocol batches' see the same read-only files: locks,
    leases and watches on them would be a channel between the two, so a scoring process has none."""
    limits = SandboxLimits(cpu_seconds=60, drop_to=NOBODY if os.geteuid() == 0 else None, scoring=True)
    inputs = Path(tempfile.mkdtemp())
    inputs.chmod(0o755)
    fd = root_userns() if os.geteuid() == 0 else None
    try:
        proc = subprocess.run(Sandbox(inputs=str(inputs), limits=limits).command(
            py(SCORER_PROBE) + [json.dumps(limits.to_json())], fd), capture_output=True, text=True,
            timeout=120, pass_fds=(fd,) if fd is not None else ())
    finally:
        if fd is not None:
            os.close(fd)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in out.items() if k != "getfd"} == dict.fromkeys(
        ("flock", "lockf", "getlk", "inotify"), "Operation not permitted")
    assert out["getfd"] == "allowed"


@pytest.mark.slow
def test_without_namespaces_the_limits_and_the_filter_still_apply():
    """--unsafe-no-namespaces: no bubblewrap, but still no sockets, no processes, limited files."""
    from harness.execution.sandbox import OPEN_FILES

    limits = SandboxLimits(cpu_seconds=100, namespaces=False)
    probe = f"""
import json, resource, socket, subprocess
from harness.execution.confine import enter
from harness.execution.sandbox import SandboxLimits
notes = enter(SandboxLimits(**{limits.to_json()!r}), "cpu")
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
    proc = subprocess.run(py(probe), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["socket"] == out["exec"] == "Operation not permitted"
    assert out["nofile"] == OPEN_FILES and out["cpu"] == 100
    assert "no namespaces" in out["notes"][0]


def test_untrusted_is_refused_where_there_is_no_sandbox(tmp_path, monkeypatch):
    from harness.errors import RunError
    from harness.execution.options import Execution
    from harness.execution.sweep import SweepEntry, sweep
    from harness.store.results import ResultsStore

    monkeypatch.setattr("harness.execution.checks.sandbox_unavailable", lambda: "no bwrap here")
    with pytest.raises(RunError, match="no bwrap here.*--unsafe-no-namespaces"):
        sweep(ResultsStore(tmp_path), SweepEntry(str(ROOT / "custom_norm.py"), "x", "submission",
                                                 load_suite("smoke")),
              Execution(isolation=Isolation(untrusted=True)))
    assert not list(tmp_path.glob("runs/*.json")) and not list(tmp_path.glob("submissions/*"))


def test_a_refused_file_is_not_kept_and_the_message_names_it(tmp_path):
    """--scan-policy refuse: a finding refuses the file, naming it as the user did; the store
    keeps no copy of it; --trust-code runs it, and the record says so."""
    runner = CliRunner()
    source = tmp_path / "mine.py"
    source.write_text((FIXTURES / "dies_in_worker.py").read_text().replace(
        "return super().forward(x)", "os.getpid()\n        return super().forward(x)"))
    args = ["--suite", "smoke", "--device", "cpu", "--results", str(tmp_path / "res"), "--trusted",
            "--scan-policy", "refuse"]
    refused = runner.invoke(main, ["submit", str(source), "--name", "m", *args])
    assert refused.exit_code == 1
    assert f"{source}: refused by the static scan" in refused.output
    assert "line 7: imports os" in refused.output and "--trust-code" in refused.output
    assert "/submissions/" not in refused.output
    assert not list((tmp_path / "res").glob("submissions/*.py"))


@needs_sandbox
@pytest.mark.slow
def test_eval_untrusted_scores_exactly_as_a_trusted_eval(tmp_path):
    """The split (training without the test set, scoring without labels, the score computed by
    the parent) gives the very numbers a trusted in-process run gives, on the CPU."""
    args = ["--arch", "resnet20", "--dataset", "digits", "--epochs", "2", "--limit-train", "96",
            "--limit-test", "64", "--batch-size", "32", "--device", "cpu"]
    runner = CliRunner()
    trusted = runner.invoke(main, ["eval", str(ROOT / "custom_norm.py"), *args, "--results",
                                   str(tmp_path / "t")])
    untrusted = runner.invoke(main, ["eval", str(ROOT / "custom_norm.py"), *args, "--untrusted",
                                     "--results", str(tmp_path / "u")])
    assert trusted.exit_code == 0 and untrusted.exit_code == 0, untrusted.output
    (t,), (u,) = [[json.loads(p.read_text()) for p in (tmp_path / d / "runs").glob("*.json")]
                  for d in ("t", "u")]
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "check_change")
    assert [{k: e[k] for k in keys} for e in u["epochs"]] == [{k: e[k] for k in keys} for e in t["epochs"]]
    assert u["best_acc"] == t["best_acc"] and u["flags"] == t["flags"]
    assert u["isolation"]["sandboxed"] and "epochs.train_loss" in u["reported"]
    assert u["submission"]["path"].startswith(str(tmp_path / "u" / "submissions"))
    assert u["checks"][0]["name"] == "static-scan" and u["scan"]["policy"] == "report"
    assert not list((tmp_path / "u").glob("checkpoints/*/*"))  # state and journal gone with it
    assert f"TEST_METRICS: test_acc={u['best_acc']:.2f}" in untrusted.output
    for out, record in ((trusted, t), (untrusted, u)):  # eval says what its flags mean
        assert ("flag: chance:" in out.output) == ("chance" in record["flags"])


@pytest.mark.slow
def test_submit_summarises_failures_and_exits_by_the_worst(tmp_path, monkeypatch):
    import dataclasses

    smoke = load_suite("smoke")
    tiny = dataclasses.replace(smoke, settings=smoke.settings[:1], seeds=(1, 2),
                               recipe=Recipe(epochs=1, batch_size=32), limit_train=96, limit_test=64)
    monkeypatch.setattr("harness.protocol.suites.load_suite", lambda name: tiny)
    runner = CliRunner()
    args = ["--suite", "tiny", "--device", "cpu", "--jobs", "2", "--results", str(tmp_path),
            "--trusted"]
    nan = runner.invoke(main, ["submit", str(HOSTILE / "turns_nan.py"), "--name", "nan", *args])
    assert nan.exit_code == EXIT_DIVERGED, nan.output
    assert "1 ok, 1 diverged, 0 failed" in nan.output and "failures by category: diverged 1" in nan.output
    raises = runner.invoke(main, ["submit", str(HOSTILE / "raises_on_third_call.py"), "--name", "r",
                                  *args])
    assert raises.exit_code == 1
    assert "failures by category: exception 1" in raises.output
    assert "exception: resnet20-digits seed 2: ValueError: third call" in raises.output


def test_ci_fails_the_security_tests_where_they_would_skip(monkeypatch):
    """HARNESS_REQUIRE_SANDBOX=1 (set by .ci/run): a machine without a sandbox fails the
    sandboxed tests instead of skipping them; elsewhere they skip with the reason."""
    from harness.execution import sandbox

    from conftest import sandbox_gate

    monkeypatch.setattr(sandbox, "sandbox_unavailable", lambda: "bwrap missing (test)")
    monkeypatch.setenv("HARNESS_REQUIRE_SANDBOX", "1")
    with pytest.raises(pytest.fail.Exception, match="HARNESS_REQUIRE_SANDBOX=1 .*bwrap missing"):
        sandbox_gate()
    monkeypatch.delenv("HARNESS_REQUIRE_SANDBOX")
    with pytest.raises(pytest.skip.Exception, match="no sandbox here: bwrap missing"):
        sandbox_gate()
    assert "HARNESS_REQUIRE_SANDBOX=1" in (ROOT / ".ci" / "run").read_text()

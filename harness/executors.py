"""Where the runs of a sweep execute: each in its own worker process, watched by the parent.

``LocalExecutor(jobs=N)`` keeps N worker processes (``python -m harness.worker``) busy per visible
GPU (N in all on a CPU-only machine), one run each at a time. Small CIFAR models leave most of a
big GPU idle, so several runs side by side on one GPU finish a suite sooner. With one job the
worker's output is shown live; with more it goes to ``RESULTS/logs/`` only.

The parent holds each worker to a wall-clock timeout and a memory limit (resident memory of the
worker's whole process tree, polled), and writes every record itself, after checking what the
worker reported: a crash, hang, out-of-memory or exception of one run is recorded with its
category and never stops or loses another run. Categories (``failure.category``): ``interface``
(the layer does not fit the model), ``exception``, ``timeout``, ``out-of-memory``, ``diverged``,
``tampered`` (the layer changed the harness or torch), ``crashed`` (the worker died without a
word: a segfault, or killed from outside), ``setup`` (missing data, unusable device).
With ``untrusted``, each worker is also sandboxed (:mod:`harness.sandbox`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.checkpoint import Checkpoint, run_identity
from harness.data import resolve_dataset_name
from harness.dynamics import curve_metrics
from harness.fast import SpeedOptions
from harness.record import SCHEMA_VERSION, environment, new_run_id, utc_now, write_json_atomic
from harness.runner import PROTOCOL_VERSION, RunConfig, config_fields, run_flags
from harness.sandbox import Policy, command
from harness.status import Claim
from harness.store import make_key
from harness.train import Recipe, best_index
from harness.worker import RESULT_MARKER


@dataclass
class Task:
    """One run of a sweep: its configuration and what its record carries besides."""

    config: RunConfig
    label: str  # "ENTRY ARCH-DATASET seed N", for the console and the log's name
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)


def config_to_json(config: RunConfig) -> dict[str, Any]:
    return asdict(config)


def config_from_json(data: dict[str, Any]) -> RunConfig:
    data = dict(data)
    data["recipe"] = Recipe(**data["recipe"])
    data["speed"] = SpeedOptions(**data["speed"])
    return RunConfig(**data)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_slots(jobs: int, device: str, gpus: list[str], cpus: int) -> list[dict[str, str]]:
    """The environment of each worker slot: ``jobs`` per GPU when the device lets the harness choose
    (auto or cuda), else ``jobs`` in all; CPU threads shared out evenly so workers do not fight."""
    spread = device in ("auto", "cuda") and bool(gpus)
    gpu_of_slot = [g for g in gpus for _ in range(jobs)] if spread else [None] * jobs
    threads = str(max(1, cpus // len(gpu_of_slot)))
    slots = []
    for gpu in gpu_of_slot:
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        slots.append(env)
    return slots


def crash_record(task: Task, category: str, message: str, log_tail: str = "") -> dict[str, Any]:
    """The record of a run whose worker ended without a record of its own."""
    c = task.config
    name = Path(c.submission).stem
    return {
        "schema_version": SCHEMA_VERSION, "protocol_version": PROTOCOL_VERSION,
        "run_id": new_run_id(task.extra.get("entry") or name, c.arch, c.dataset, f"s{c.seed}"),
        "status": "failed",
        "failure": {"category": category, "message": message[:500], "log_tail": log_tail[-4000:]},
        "comparable": False, "deviations": [],
        "config": {**config_fields(c, c.dataset), "device": c.device, "compile": None,
                   "speed": None},
        "submission": {"path": c.submission, "name": name, "sha256": task.sha256, "class": None},
        "checks": task.checks, "environment": environment(None),
        **task.extra,
        "epochs": [], "epochs_completed": 0, "best_acc": None, "best_epoch": None,
        "final_acc": None, "flags": [], "started_at": utc_now(), "ended_at": utc_now(),
        "dynamics": curve_metrics([]), "probes": [], "inference": None, "norm_layers": None,
        "stopped_early": None,
    }


DEFAULT_TIMEOUT_S = 24 * 3600.0


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class Isolation:
    """How each worker is held: wall-clock ``timeout_s`` (None: none), ``memory_bytes`` of resident
    memory for its process tree (None: 80% of this machine's memory shared out over the workers),
    and, when ``untrusted``, the sandbox (``namespaces=False`` only when explicitly overridden)."""

    timeout_s: float | None = DEFAULT_TIMEOUT_S
    memory_bytes: int | None = None
    untrusted: bool = False
    namespaces: bool = True
    check_timeout: float = 10.0

    def memory_for(self, slots: int) -> int:
        return self.memory_bytes or int(0.8 * physical_memory() / max(1, slots))


OnStart = Callable[[Task], None]
OnDone = Callable[[Task, dict[str, Any]], None]
Echo = Callable[[str], None]


class LocalExecutor:
    def __init__(self, jobs: int = 1, device: str = "auto", isolation: Isolation | None = None):
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.jobs, self.device = jobs, device
        self.isolation = isolation or Isolation()

    def run(self, tasks: list[Task], store, *,
            execute: Callable[..., tuple[dict[str, Any], Any]] | None = None,
            submission=None, on_start: OnStart | None = None, on_done: OnDone | None = None,
            echo: Echo | None = None) -> list[dict[str, Any]]:
        """Run every task; return their records in task order. Each runs in a worker process,
        unless ``execute`` is given: then it runs in this process, one after another (tests)."""
        if execute is None:
            return self.run_in_workers(tasks, store, on_start=on_start, on_done=on_done,
                                       echo=echo if self.jobs == 1 else None)
        records = []
        for task in tasks:
            if on_start:
                on_start(task)
            record, _ = execute(task.config, store.root, submission=submission,
                                checks=task.checks, extra=task.extra)
            store.index(record)
            records.append(record)
            if on_done:
                on_done(task, record)
        return records

    def run_in_workers(self, tasks: list[Task], store, *, slots: list[dict[str, str]] | None = None,
                       on_start: OnStart | None = None, on_done: OnDone | None = None,
                       echo: Echo | None = None) -> list[dict[str, Any]]:
        """Run every task in a worker process, as many at once as there are ``slots`` (default:
        ``jobs`` per visible GPU); return their records in task order."""
        slots = slots or worker_slots(self.jobs, self.device, visible_gpus(), os.cpu_count() or 1)
        free = list(range(len(slots)))
        lock = threading.Lock()
        work_dir = store.root / "logs"
        work_dir.mkdir(parents=True, exist_ok=True)
        memory = self.isolation.memory_for(len(slots))

        def one(i: int, task: Task) -> dict[str, Any]:
            with lock:
                slot = free.pop()
                if on_start:
                    on_start(task)
            try:
                record = run_in_worker(task, store, slots[slot], work_dir, i, self.isolation,
                                       memory, echo)
            finally:
                with lock:
                    free.append(slot)
            with lock:
                if on_done:
                    on_done(task, record)
            return record

        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            futures = [pool.submit(one, i, task) for i, task in enumerate(tasks)]
            return [f.result() for f in futures]


# -- one worker process -------------------------------------------------------------------------

@dataclass
class WorkerOutcome:
    result: dict[str, Any] | None  # what the worker reported (the marker line), if it did
    returncode: int
    killed_for: str | None  # "timeout" or "out-of-memory" when the parent killed it
    log_path: Path
    peak_rss: int = 0

    def log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def _session_rss(session: int) -> int:
    """Resident bytes of every process in ``session`` (the worker and anything it started)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            if int(stat[stat.rindex(b")") + 2:].split()[3]) != session:
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return total


# Worker sessions alive in this process: each runs in a session of its own (so that a timeout
# kills its whole tree), which also shields it from the terminal's Ctrl-C and from a job
# scheduler's signal to this process; kill_workers() ends them when this process is stopped.
_SESSIONS: set[int] = set()


def kill_workers() -> None:
    for pid in list(_SESSIONS):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_worker_process(argv: list[str], env: dict[str, str], log_path: Path,
                       timeout_s: float | None, memory_bytes: int | None,
                       echo: Echo | None = None, poll_s: float = 0.2,
                       beat: Callable[[], None] | None = None) -> WorkerOutcome:
    """Start ``argv`` in a new session, copy its output to ``log_path`` (and ``echo``), and kill
    its whole session when it runs past ``timeout_s`` or its resident memory passes
    ``memory_bytes``, or when this process is interrupted; ``beat`` is called while it runs (a
    claim's heartbeat)."""
    result: dict[str, Any] = {}
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env={**os.environ, **env}, start_new_session=True)

        def pump() -> None:
            for line in proc.stdout:
                if line.startswith(RESULT_MARKER):
                    try:
                        result["value"] = json.loads(line[len(RESULT_MARKER):])
                    except json.JSONDecodeError:
                        result.pop("value", None)
                    continue
                log.write(line)
                log.flush()
                if echo:
                    echo(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        _SESSIONS.add(proc.pid)
        try:
            killed_for, peak = _watch(proc, timeout_s, memory_bytes, poll_s, beat)
        except BaseException:  # interrupted or stopped: the worker must not outlive its parent
            _kill_session(proc)
            raise
        finally:
            _SESSIONS.discard(proc.pid)
        reader.join(timeout=10)
    return WorkerOutcome(result.get("value"), proc.returncode, killed_for, log_path, peak)


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _watch(proc: subprocess.Popen, timeout_s: float | None, memory_bytes: int | None,
           poll_s: float, beat: Callable[[], None] | None) -> tuple[str | None, int]:
    """Poll the worker until it ends; kill its session past the time or memory limit. Returns
    what it was killed for (or None) and its peak resident memory."""
    start, peak = time.monotonic(), 0
    while proc.poll() is None:
        killed_for = None
        if timeout_s and time.monotonic() - start > timeout_s:
            killed_for = "timeout"
        elif memory_bytes:
            peak = max(peak, _session_rss(proc.pid))
            if peak > memory_bytes:
                killed_for = "out-of-memory"
        if killed_for:
            _kill_session(proc)
            return killed_for, peak
        if beat:
            beat()
        time.sleep(poll_s)
    return None, peak


def _stem(label: str, index: int) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)[:80]
    return f"{utc_now().replace(':', '')}-{index:03d}-{stem}"


def _sandbox_policy(isolation: Isolation, store, memory: int, threads: int,
                    checkpoint_dir: Path | None = None) -> Policy:
    private = tempfile.mkdtemp(prefix="harness-sandbox-")
    cpu = None
    if isolation.timeout_s:  # every thread may burn CPU for the whole wall-clock limit, no more
        cpu = int(isolation.timeout_s * max(1, threads)) + 60
    return Policy(private_dir=private, hide=[str(store.root.resolve())],
                  checkpoint_dir=str(checkpoint_dir.resolve()) if checkpoint_dir else None,
                  namespaces=isolation.namespaces, memory_bytes=memory, cpu_seconds=cpu)


def sandbox_checkpoint_dir(store, task: Task) -> Path:
    """A sandboxed run's own checkpoint folder: it can reach no other run's checkpoint."""
    identity = run_identity(task.sha256, task.config, resolve_dataset_name(task.config.dataset),
                            PROTOCOL_VERSION)
    return store.root / "checkpoints" / "sandboxed" / identity


def _launch(spec: dict[str, Any], stem: str, work_dir: Path, env: dict[str, str],
            policy: Policy | None, timeout_s: float | None, memory: int,
            echo: Echo | None = None, beat: Callable[[], None] | None = None) -> WorkerOutcome:
    """Write the spec, run ``python -m harness.worker`` on it (inside the sandbox when ``policy``),
    and clean up its spec and private folder; the log stays in ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path, log_path = work_dir / f"{stem}.spec.json", work_dir / f"{stem}.log"
    write_json_atomic(spec_path, {**spec, "sandbox": policy.to_json() if policy else None})
    argv = [sys.executable, "-m", "harness.worker", str(spec_path)]
    if policy:
        argv = command(policy, argv)
        env = {**env, "JOBLIB_MULTIPROCESSING": "0"}  # scikit-learn's joblib: no /dev/shm to use
    try:
        return run_worker_process(argv, env, log_path, timeout_s, memory, echo, beat=beat)
    finally:
        if policy:
            shutil.rmtree(policy.private_dir, ignore_errors=True)
        spec_path.unlink(missing_ok=True)


def _failure_of(outcome: WorkerOutcome, isolation: Isolation, memory: int) -> tuple[str, str]:
    """Category and message for a worker that ended without reporting a result."""
    last = next((ln for ln in reversed(outcome.log_tail().splitlines()) if ln.strip()), "no output")
    where = f"last line of {outcome.log_path.name}: {last}"
    if outcome.killed_for == "timeout":
        return "timeout", f"killed after the wall-clock limit of {isolation.timeout_s:g} s; {where}"
    if outcome.killed_for == "out-of-memory":
        return "out-of-memory", (f"killed when its resident memory passed the limit of "
                                 f"{memory / 2**30:.1f} GiB; {where}")
    code = outcome.returncode
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout", f"stopped at its CPU-time limit; {where}"
    if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return "crashed", (f"worker killed (SIGKILL) from outside the harness (the kernel's OOM "
                           f"killer?) before it reported; {where}")
    return "crashed", f"worker process exited with code {code} before writing its record; {where}"


RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def accept_record(task: Task, reported: dict[str, Any]) -> dict[str, Any]:
    """The record the parent writes from what a worker reported: the fields the parent knows are
    its own, the scores are recomputed from the per-epoch metrics, and anything malformed makes it
    a failed record rather than a result."""
    record = dict(reported)
    c = task.config
    try:
        if record.get("status") not in ("ok", "diverged", "failed"):
            raise ValueError(f"status {record.get('status')!r}")
        if not RUN_ID.match(str(record.get("run_id", ""))):
            raise ValueError("run id")
        epochs = record.get("epochs") or []
        for i, e in enumerate(epochs, 1):
            acc = e["test_acc"]
            if e["epoch"] != i or not (isinstance(acc, (int, float)) and 0.0 <= acc <= 100.0):
                raise ValueError(f"epoch {i}")
        i = best_index([e["test_acc"] for e in epochs])
        best = epochs[i] if i is not None else None
        record.update({
            "epochs_completed": len(epochs),
            "best_acc": best["test_acc"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "final_acc": epochs[-1]["test_acc"] if epochs else None,
        })
        record["config"] = {**record["config"], **config_fields(c, record["config"]["dataset"])}
        record["submission"] = {**record["submission"], "path": c.submission, "sha256": task.sha256,
                                "name": Path(c.submission).stem}
        record["checks"] = task.checks
        record["dynamics"] = curve_metrics(epochs)
        record.update(task.extra)
        record["flags"] = run_flags(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return crash_record(task, "crashed", f"the worker reported a malformed record ({exc}); "
                                             "not kept as a result")
    return record


def task_key(task: Task) -> str:
    """The run key (harness.store.make_key) of a task, from its configuration and extras."""
    c = task.config
    recipe_id = (task.extra.get("suite") or {}).get("recipe_id") or "adhoc"
    return make_key(task.sha256, c.arch, resolve_dataset_name(c.dataset), c.seed, recipe_id,
                    PROTOCOL_VERSION, c.precision)


def run_in_worker(task: Task, store, env: dict[str, str], work_dir: Path, index: int,
                  isolation: Isolation | None = None, memory: int | None = None,
                  echo: Echo | None = None) -> dict[str, Any]:
    """Run one task in a fresh worker process; write its record (the worker's, checked, or one
    saying why there is none) and return it."""
    isolation = isolation or Isolation()
    memory = memory or isolation.memory_for(1)
    policy, checkpoints = None, None
    if isolation.untrusted:
        threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)  # torch's default: all
        checkpoints = sandbox_checkpoint_dir(store, task)
        checkpoints.mkdir(parents=True, exist_ok=True)
        policy = _sandbox_policy(isolation, store, memory, threads, checkpoints)
    spec = {"mode": "run", "config": config_to_json(task.config), "extra": task.extra,
            "checks": task.checks, "sha256": task.sha256,
            "results": None if policy else str(store.root.resolve())}
    with Claim(store.root, task_key(task), task.label) as claim:
        outcome = _launch(spec, _stem(task.label, index), work_dir, env, policy,
                          isolation.timeout_s, memory, echo, beat=claim.beat)
    reported = outcome.result or {}
    if "record" in reported:
        record = accept_record(task, reported["record"])
    elif "error" in reported:
        record = crash_record(task, reported.get("category", "exception"), reported["error"],
                              outcome.log_tail())
    else:
        category, message = _failure_of(outcome, isolation, memory)
        record = crash_record(task, category, message, outcome.log_tail())
    store.add(record)
    if "record" in reported:  # the record is the run's result now
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)
        else:
            dataset = resolve_dataset_name(task.config.dataset)
            Checkpoint.for_run(store.root, run_identity(task.sha256, task.config, dataset,
                                                        PROTOCOL_VERSION)).remove()
    return record


def vet_in_worker(path: Path, store, isolation: Isolation,
                  device: str = "cpu") -> dict[str, Any]:
    """The pre-flight checks of a submission, run in a (sandboxed, when untrusted) worker so that
    this process never imports it. Returns ``{"report": ...}`` or ``{"error", "category"}``."""
    memory = isolation.memory_for(1)
    policy = _sandbox_policy(isolation, store, memory, 1) if isolation.untrusted else None
    config = RunConfig(submission=str(path), arch="resnet20", dataset="digits", device=device)
    spec = {"mode": "check", "config": config_to_json(config),
            "check_timeout": isolation.check_timeout}
    # Each check has its own limit inside; this one stops a worker that hangs outside them.
    limit = 120 + 20 * isolation.check_timeout if isolation.check_timeout else isolation.timeout_s
    outcome = _launch(spec, _stem(f"check-{path.stem}", 0), store.root / "logs",
                      {"OMP_NUM_THREADS": "1"}, policy, limit, memory)
    if outcome.result:
        return outcome.result
    category, message = _failure_of(outcome, Isolation(timeout_s=limit), memory)
    return {"error": f"{path}: the checks did not complete: {message}", "category": category}

"""Where the runs of a sweep execute: each in worker processes, watched by the parent.

``LocalExecutor(jobs=N)`` keeps N runs going per visible GPU (N in all on a CPU-only machine).
Small CIFAR models leave most of a big GPU idle, so several runs side by side on one GPU finish a
suite sooner. With one job the workers' output is shown live; with more it goes to
``RESULTS/logs/`` only.

A run of trusted code (a baseline, your own file with ``--trusted``) is one worker process that
trains and scores in itself and writes its record to a result file, which the parent validates.
A run of untrusted code is split (:mod:`harness.execution.untrusted`): a sandboxed training process that never
sees the test set, a sandboxed scoring process that never sees a label, and the parent, which
alone computes the scores. Either way the parent holds the run to a wall-clock timeout and a
memory limit (:mod:`harness.execution.watch`) and writes every record itself: a crash, hang,
out-of-memory or exception of one run is recorded with its category and never stops or loses
another run. Categories (``failure.category``): ``interface`` (the layer does not fit the model),
``exception``, ``timeout``, ``out-of-memory``, ``diverged``, ``tampered`` (trusted runs: the layer
changed the harness or torch), ``crashed`` (a worker died without a word), ``setup`` (missing
data, unusable device), ``resource-limit`` (threads), ``malformed`` (a sandboxed process handed
over something that is not what was asked for). Every record is validated before it is stored;
one that is not valid is replaced by a ``malformed`` failure record, so no run is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from harness.engine.checkpoint import Checkpoint
from harness.engine.device import usable_cpus
from harness.engine.runner import config_fields
from harness.execution.options import Isolation
from harness.execution.stops import heeding_stops, stop_signals
from harness.execution.task import Echo, Slot, Task, crash_record, safe_label
from harness.execution.watch import (
    STOPPING,
    CappedLog,
    Process,
    Stopping,
    Watch,
    WatchLimits,
    kill_workers,
    printable_json,
)
from harness.reporting import Reporter
from harness.store import schema
from harness.store.claims import Claim
from harness.store.derived import finish_record
from harness.store.record import new_run_id, utc_now, write_json_atomic
from harness.store.schema import MAX_DEPTH, json_depth

# How a run that the sweep's Ctrl-C killed ends: its processes died without a word, or a pipe
# broke mid-message. Any other failure (an interface error, out of memory) is the run's own.
KILLED_BY_STOP = ("crashed", "malformed")
RESULT_BYTES = 64 << 20  # a trusted worker's record, or a check report


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_slots(jobs: int, device: str, gpus: list[str], cpus: int,
                 threads: int | None = None) -> list[dict[str, str]]:
    """The environment of each worker slot: ``jobs`` per GPU when the device lets the harness choose
    (auto or cuda), else ``jobs`` in all; CPU threads (``threads`` per worker, or the CPUs shared
    out evenly) so that workers do not fight: an OpenMP thread that has to wait for a core makes
    its siblings spin, and a run beside another command's can slow down tenfold."""
    spread = device in ("auto", "cuda") and bool(gpus)
    gpu_of_slot = [g for g in gpus for _ in range(jobs)] if spread else [None] * jobs
    per_worker = str(threads or max(1, cpus // len(gpu_of_slot)))
    slots = []
    for gpu in gpu_of_slot:
        env = {"OMP_NUM_THREADS": per_worker, "MKL_NUM_THREADS": per_worker}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        slots.append(env)
    return slots



# A task that never ran because the sweep was interrupted first.
NOT_STARTED = object()


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C: how many of its runs had finished (their records kept), were
    stopped in flight, and had not started."""

    def __init__(self, finished: int, stopped: int, not_started: int):
        super().__init__(f"{finished} finished, {stopped} stopped, {not_started} not started")
        self.finished, self.stopped, self.not_started = finished, stopped, not_started


class LocalExecutor:
    def __init__(self, jobs: int = 1, device: str = "auto", isolation: Isolation | None = None,
                 threads: int | None = None):
        if jobs < 1 or (threads is not None and threads < 1):
            raise ValueError("jobs and threads must be at least 1")
        self.jobs, self.device, self.threads = jobs, device, threads
        self.isolation = isolation or Isolation()

    def run(self, tasks: list[Task], store, *, reporter: Reporter | None = None,
            detach: bool = False, name: str = "harness",
            slots: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
        """Run every task, as many at once as there are ``slots`` (default: ``jobs`` per visible
        GPU); return their records in task order. Local runs cannot be detached."""
        if detach:
            raise ValueError("local runs cannot be detached; use a cluster executor")
        slots = slots or worker_slots(self.jobs, self.device, visible_gpus(), usable_cpus(),
                                      self.threads)
        echo = reporter.worker_line if reporter is not None and len(slots) == 1 else None
        free = list(range(len(slots)))
        lock = threading.Lock()
        work_dir = store.root / "logs"
        work_dir.mkdir(parents=True, exist_ok=True)
        memory = self.isolation.memory_for(len(slots))

        def one(i: int, task: Task) -> Any:
            with lock:
                if STOPPING.is_set():
                    return NOT_STARTED
                slot = free.pop()
                task.report_started(reporter)
            try:
                record = run_in_worker(task, store, slots[slot], work_dir, i, self.isolation,
                                       memory, echo)
            finally:
                with lock:
                    free.append(slot)
            if record is None:  # stopped by Ctrl-C
                return None
            with lock:
                task.report_finished(reporter, record)
            return record

        STOPPING.clear()
        pool = ThreadPoolExecutor(max_workers=len(slots))
        futures: list[Future[Any]] = []
        try:
            with heeding_stops() as wait_for:  # a Ctrl-C that one of torch's threads took included
                with stop_signals(blocked=True):  # the pool's threads start here, never take one
                    futures += [pool.submit(one, i, task) for i, task in enumerate(tasks)]
                wait_for(futures)
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            # The first Ctrl-C: start nothing more, kill the runs in flight (workers live in
            # sessions of their own, so the terminal's signal never reached them), keep what
            # finished. A second Ctrl-C while this happens ends the command at once.
            STOPPING.set()
            cancelled = sum(f.cancel() for f in futures)
            kill_workers()
            pool.shutdown(wait=True, cancel_futures=True)
            results = [f.result() for f in futures if not f.cancelled() and f.exception() is None]
            not_started = cancelled + sum(r is NOT_STARTED for r in results)
            finished = sum(isinstance(r, dict) for r in results)
            STOPPING.clear()  # every thread is done: a later sweep in this process starts afresh
            raise Interrupted(finished, len(tasks) - not_started - finished, not_started) from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# -- one run ----------------------------------------------------------------------------------

def log_stem(label: str, index: int) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)[:80]
    return f"{utc_now().replace(':', '')}-{index:03d}-{stem}"


def failure_of(watch: Watch, code: int, log: CappedLog) -> tuple[str, str]:
    """Category and message for a worker that ended without a result."""
    last = log.last_line()
    where = f"last line of {log.path.name}: {last}"
    if watch.killed_for:
        return watch.category(), f"killed: {watch.detail}; {where}"
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout", f"stopped at its CPU-time limit; {where}"
    if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return "crashed", (f"worker killed (SIGKILL) from outside the harness (the kernel's OOM "
                           f"killer?) before it reported; {where}")
    return "crashed", f"worker process exited with code {code} before writing its record; {where}"


def read_result(path: Path) -> dict[str, Any] | None:
    """A trusted worker's result file, size-capped; None when there is none (or it is not JSON)."""
    try:
        if path.stat().st_size > RESULT_BYTES:
            return None
        return parse_result(path.read_bytes())
    except OSError:
        return None


def parse_result(data: bytes | None) -> dict[str, Any] | None:
    """A worker's result (JSON of an object), or None, whatever the bytes."""
    try:
        value = json.loads(data.decode("utf-8")) if data is not None else None
    except Exception:  # noqa: BLE001 - not UTF-8, not JSON, nested too deep, numbers too long
        return None
    return printable_json(value) if isinstance(value, dict) and json_depth(value) <= MAX_DEPTH else None


def run_plain(job: dict[str, Any], stem: str, work_dir: Path, env: dict[str, str],
              limits: WatchLimits, echo: Echo | None = None,
              beat: Callable[[], None] | None = None) -> tuple[dict[str, Any] | None, Watch, int, CappedLog]:
    """``python -m harness.execution.worker`` on ``job``, unsandboxed (trusted code); its result file."""
    folder = Path(tempfile.mkdtemp(prefix="harness-worker-"))
    try:
        job = {**job, "result": str(folder / "result.json")}
        write_json_atomic(folder / "job.json", job)
        log = CappedLog(work_dir / f"{stem}.log", echo)
        watch = Watch(limits, beat=beat)
        process = watch.add(Process([sys.executable, "-m", "harness.execution.worker", str(folder / "job.json")],
                                    env, log, sandboxed=False))
        try:
            code = process.wait()
        except BaseException:  # interrupted: the worker must not outlive its parent
            process.kill()
            raise
        finally:
            watch.stop()
        return read_result(folder / "result.json"), watch, code, log
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def accept_record(task: Task, reported: dict[str, Any]) -> dict[str, Any]:
    """The record a trusted worker reported, with the fields the parent knows set by the parent
    and checked against the run-record schema; anything malformed makes it a failed record."""
    record = dict(reported)
    spec = task.spec
    try:
        record["config"] = {**record["config"], **config_fields(spec, record["config"]["dataset"])}
        record["submission"] = {**record["submission"], "path": spec.submission, "sha256": spec.sha256,
                                "name": Path(spec.submission).stem}
        record["checks"] = task.checks
        record.update(task.extra)
        record["run_id"] = new_run_id(safe_label(task.extra.get("entry") or Path(spec.submission).stem),
                                      spec.arch, record["config"]["dataset"], f"s{spec.seed}") \
            if not schema.RUN_ID.match(str(record.get("run_id", ""))) else record["run_id"]
        finish_record(record, record.get("epochs") or [])
        schema.validate_record(record)
    except Exception as exc:  # noqa: BLE001 - whatever the worker wrote, a record comes out
        return crash_record(task, "malformed", f"the worker reported a malformed record "
                                               f"({str(exc).splitlines()[0][:200]}); not kept")
    return record


def run_in_worker(task: Task, store, env: dict[str, str], work_dir: Path, index: int,
                  isolation: Isolation | None = None, memory: int | None = None,
                  echo: Echo | None = None) -> dict[str, Any] | None:
    """Run one task in worker processes (split and sandboxed when untrusted); write its record
    and return it (None: the sweep was interrupted and this run killed; nothing is written)."""
    from harness.execution.untrusted import run_untrusted

    isolation = isolation or Isolation()
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with Claim(store.root, task.spec.key(), task.label) as claim:
            slot = Slot(store, env, work_dir, log_stem(task.label, index), isolation,
                        memory or isolation.memory_for(1),
                        int(env.get("OMP_NUM_THREADS") or usable_cpus()), echo, claim.beat)
            record = run_untrusted(task, slot) if isolation.untrusted else _run_trusted(task, slot)
    except Stopping:
        return None  # the sweep's Ctrl-C came before its workers started
    if STOPPING.is_set() and (record.get("failure") or {}).get("category") in KILLED_BY_STOP:
        return None  # killed by the sweep's Ctrl-C: not a failure of the run, which will resume
    try:
        store.add(record)  # validated there
    except Exception as exc:  # noqa: BLE001 - never the sweep's end: this run's failure instead
        record = crash_record(task, "malformed", f"the run's record could not be stored "
                                                 f"({type(exc).__name__}: "
                                                 f"{(str(exc).splitlines() or [''])[0][:200]}); not kept")
        store.add(record)
    return record


def _run_trusted(task: Task, slot: Slot) -> dict[str, Any]:
    job = {"mode": "run", "spec": task.spec.to_json(), "extra": task.extra,
           "checks": task.checks, "results": str(slot.store.root.resolve())}
    limits = WatchLimits(timeout_s=slot.isolation.timeout_s, memory_bytes=slot.memory)
    result, watch, code, log = run_plain(job, slot.stem, slot.work_dir, slot.env, limits,
                                         slot.echo, slot.beat)
    if result and "record" in result:
        record = accept_record(task, result["record"])
        Checkpoint.for_run(slot.store.root, task.spec.digest()).remove()
        return record
    if result and "error" in result:
        return crash_record(task, str(result.get("category", "exception")), str(result["error"]),
                            log.tail())
    category, message = failure_of(watch, code, log)
    return crash_record(task, category, message, log.tail())

"""Where the runs of a sweep execute.

``LocalExecutor(jobs=1)`` runs them in this process, one after another, with a progress bar.
``LocalExecutor(jobs=N)`` keeps N worker processes busy per visible GPU (N in all on a CPU-only
machine), each running one run at a time through ``python -m harness.worker``. Small CIFAR models
leave most of a big GPU idle, so several runs side by side on one GPU finish a suite sooner.

Every worker writes its own record into the shared results store (atomically, index under a
lock), so what one run finished is kept whatever happens to another. A worker that dies without
writing a record (killed, out of memory, a crash in native code) gets a ``failed`` record written
by the parent, with category ``crashed``, its exit code and the tail of its log, which is kept in
``RESULTS/logs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.fast import SpeedOptions
from harness.record import SCHEMA_VERSION, environment, new_run_id, utc_now, write_json_atomic
from harness.runner import PROTOCOL_VERSION, RunConfig, config_fields
from harness.train import Recipe


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
    """The record of a run whose process died before it could write its own."""
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
        "final_acc": None, "started_at": utc_now(), "ended_at": utc_now(),
    }


OnStart = Callable[[Task], None]
OnDone = Callable[[Task, dict[str, Any]], None]


class LocalExecutor:
    def __init__(self, jobs: int = 1, device: str = "auto"):
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.jobs, self.device = jobs, device

    def run(self, tasks: list[Task], store, *, execute: Callable[..., tuple[dict[str, Any], Any]],
            submission=None, on_start: OnStart | None = None,
            on_done: OnDone | None = None) -> list[dict[str, Any]]:
        """Run every task; return their records in task order. ``execute`` runs one in-process
        (jobs=1); with more jobs each runs in a worker process."""
        if self.jobs == 1:
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
        return self.run_in_workers(tasks, store, on_start=on_start, on_done=on_done)

    def run_in_workers(self, tasks: list[Task], store, *, slots: list[dict[str, str]] | None = None,
                       on_start: OnStart | None = None,
                       on_done: OnDone | None = None) -> list[dict[str, Any]]:
        """Run every task in a worker process, as many at once as there are ``slots`` (default:
        ``jobs`` per visible GPU); return their records in task order."""
        slots = slots or worker_slots(self.jobs, self.device, visible_gpus(), os.cpu_count() or 1)
        free = list(range(len(slots)))
        lock = threading.Lock()
        work_dir = store.root / "logs"
        work_dir.mkdir(parents=True, exist_ok=True)

        def one(i: int, task: Task) -> dict[str, Any]:
            with lock:
                slot = free.pop()
                if on_start:
                    on_start(task)
            try:
                record = run_in_worker(task, store, slots[slot], work_dir, i)
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


def run_in_worker(task: Task, store, env: dict[str, str], work_dir: Path, index: int) -> dict[str, Any]:
    """Run one task in a fresh ``python -m harness.worker`` process; return its record."""
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in task.label)[:80]
    stem = f"{utc_now().replace(':', '')}-{index:03d}-{stem}"
    spec_path, result_path, log_path = (work_dir / f"{stem}.spec.json",
                                        work_dir / f"{stem}.result.json", work_dir / f"{stem}.log")
    write_json_atomic(spec_path, {"config": config_to_json(task.config), "results": str(store.root.resolve()),
                                  "extra": task.extra, "checks": task.checks, "sha256": task.sha256,
                                  "result_path": str(result_path)})
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-m", "harness.worker", str(spec_path)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    if result_path.exists():
        record = json.loads(result_path.read_text(encoding="utf-8"))["record"]
        spec_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)
        return record
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "no output")
    record = crash_record(task, "crashed",
                          f"worker process exited with code {proc.returncode} before writing its "
                          f"record; last line of {log_path.name}: {last}", tail)
    store.add(record)
    return record

"""One run as the executors see it: its :class:`Task`, the :class:`Slot` it executes in, and the
record of a run that ended without a result of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.engine.runner import config_fields
from harness.execution.options import Isolation
from harness.protocol.spec import RunSpec
from harness.reporting import Reporter
from harness.store import schema
from harness.store.derived import curve_metrics
from harness.store.plan import PlannedRun
from harness.store.record import SCHEMA_VERSION, environment, new_run_id, utc_now


@dataclass
class Task:
    """One run of a sweep: its spec (sha256 set) and what its record carries besides."""

    spec: RunSpec
    label: str  # "ENTRY ARCH-DATASET seed N", for the console and the log's name
    extra: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    run: PlannedRun | None = None  # the planned run of a sweep it is, for the reporter
    number: tuple[int, int] = (1, 1)  # its place in the entry's plan: (index, total)

    def report_started(self, reporter: Reporter | None, state: str = "started") -> None:
        if reporter is not None and self.run is not None:
            reporter.planned(self.run, *self.number, state)

    def report_finished(self, reporter: Reporter | None, record: dict[str, Any]) -> None:
        if reporter is not None and self.run is not None:
            reporter.finished(self.run, record)


Echo = Callable[[str], None]  # where a worker's log lines are shown as they come (None: log only)


@dataclass
class Slot:
    """Where and how one run executes: its results store, its workers' environment (threads, the
    GPU they see), the folder of its log (named ``stem``), how it is held (``isolation``, with
    ``memory`` bytes of it), its threads, where its lines are echoed, and its claim's heartbeat."""

    store: Any  # harness.store.results.ResultsStore
    env: dict[str, str]
    work_dir: Path
    stem: str
    isolation: Isolation
    memory: int
    threads: int = 1
    echo: Echo | None = None
    beat: Callable[[], None] | None = None


def crash_record(task: Task, category: str, message: str, log_tail: str = "") -> dict[str, Any]:
    """The record of a run that ended without a result of its own."""
    spec = task.spec
    name = Path(spec.submission).stem
    record = {
        "schema_version": SCHEMA_VERSION, "protocol_version": spec.protocol,
        "run_id": new_run_id(safe_label(task.extra.get("entry") or name), spec.arch, spec.dataset,
                             f"s{spec.seed}"),
        "status": "failed",
        "failure": {"category": category, "message": message[:500], "log_tail": log_tail[-4000:]},
        "comparable": False, "deviations": [],
        "config": {**config_fields(spec, spec.dataset), "num_classes": None, "device": spec.device,
                   "compile": None, "speed": None},
        "submission": {"path": spec.submission, "name": name, "sha256": spec.sha256, "class": None},
        "checks": task.checks, "environment": environment(None),
        **task.extra,
        "epochs": [], "epochs_completed": 0, "best_acc": None, "best_epoch": None,
        "final_acc": None, "flags": [], "started_at": utc_now(), "ended_at": utc_now(),
        "dynamics": curve_metrics([]), "probes": [], "inference": None, "norm_layers": None,
        "stopped_early": None, "evaluation": None,
    }
    schema.validate_record(record)
    return record


def safe_label(label: str) -> str:
    """A label as the readable part of a run id or file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40] or "run"

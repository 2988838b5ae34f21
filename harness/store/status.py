"""``harness status``: where a suite or a study stands, read from the results store alone.

Every planned run (entry x setting x seed, by its run key) is in one state:

- ``done`` / ``diverged``: a completed record exists (a diverged run is a result);
- ``running``: a worker holds its claim (``RESULTS/running/``) and beat within ``STALE_S``;
- ``interrupted``: its claim went stale (the worker or its node died), or it left a checkpoint
  and no record: the next sweep resumes it;
- ``failed``: its latest record failed (with the category);
- ``missing``: nothing yet.

Claims are written by whoever runs the worker, on any machine sharing the results folder, and
carry the host, the pid and the Slurm job id; the heartbeat is the claim file's modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.store.record import slurm_job, utc_now, write_json_atomic

STALE_S = 300.0  # a claim not refreshed for this long belongs to a worker that is gone
HEARTBEAT_S = 30.0
STATES = ("done", "diverged", "running", "interrupted", "failed", "missing")


def claim_path(root: Path, key: str) -> Path:
    return Path(root) / "running" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


class Claim:
    """A run's "I am running this" marker in the shared results folder."""

    def __init__(self, root: Path, key: str, label: str):
        self.path = claim_path(root, key)
        self.payload = {"key": key, "label": label, "host": socket.gethostname(), "pid": os.getpid(),
                        "slurm": slurm_job(), "started_at": utc_now()}
        self._last = 0.0

    def __enter__(self) -> "Claim":
        write_json_atomic(self.path, self.payload)
        self._last = time.monotonic()
        return self

    def beat(self) -> None:
        """Refresh the heartbeat, at most every HEARTBEAT_S."""
        if time.monotonic() - self._last >= HEARTBEAT_S:
            try:
                os.utime(self.path)
            except OSError:
                pass
            self._last = time.monotonic()

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def live_claims(root: Path) -> set[str]:
    """The run keys that a worker, here or on another machine, is running now."""
    now, out = time.time(), set()
    folder = Path(root) / "running"
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            if now - path.stat().st_mtime <= STALE_S:
                out.add(json.loads(path.read_text())["key"])
        except (OSError, ValueError, KeyError):
            continue  # released meanwhile, or torn
    return out


@dataclass
class RunStatus:
    entry: str
    setting: str
    seed: int
    key: str
    state: str
    detail: str = ""


def _claim(root: Path, key: str, now: float) -> tuple[str, str] | None:
    path = claim_path(root, key)
    try:
        data, age = json.loads(path.read_text()), now - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    slurm = data.get("slurm") or {}
    job = (f"{slurm['array_job_id']}_{slurm['array_task_id']}" if "array_task_id" in slurm
           else slurm.get("job_id"))
    where = f"on {data.get('host')}" + (f", Slurm job {job}" if job else f", pid {data.get('pid')}")
    if age > STALE_S:
        return "interrupted", f"{where}: no heartbeat for {age / 60:.0f} min"
    return "running", f"{where}, since {data.get('started_at')}"


def run_states(store, planned: Iterable[tuple[str, str, int, str, list[Path]]]) -> list[RunStatus]:
    """``planned``: (entry, setting key, seed, run key, the checkpoint paths it may have left)."""
    from harness.store.results import COMPLETED

    latest: dict[str, dict[str, Any]] = {}
    for line in store.index_lines().values():
        previous = latest.get(line["key"])
        if previous is None or (line["status"] in COMPLETED, line["run_id"]) >= \
                (previous["status"] in COMPLETED, previous["run_id"]):
            latest[line["key"]] = line
    now, out = time.time(), []
    for entry, setting, seed, key, checkpoints in planned:
        line = latest.get(key)
        if line is not None and line["status"] in COMPLETED:
            acc = line.get("best_acc")
            out.append(RunStatus(entry, setting, seed, key, "diverged" if line["status"] == "diverged"
                                 else "done", f"best {acc:.2f}%" if acc is not None else ""))
            continue
        claimed = _claim(store.root, key, now)
        if claimed is not None:
            out.append(RunStatus(entry, setting, seed, key, *claimed))
            continue
        saved = [p for p in checkpoints if p.exists()]
        if saved:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(max(p.stat().st_mtime for p in saved)))
            out.append(RunStatus(entry, setting, seed, key, "interrupted",
                                 f"checkpoint from {when} UTC; the next run resumes it"))
            continue
        if line is not None:
            record = _failure(store, line["run_id"])
            out.append(RunStatus(entry, setting, seed, key, "failed", record))
            continue
        out.append(RunStatus(entry, setting, seed, key, "missing"))
    return out


def _failure(store, run_id: str) -> str:
    try:
        failure = json.loads((store.runs_dir / f"{run_id}.json").read_text()).get("failure") or {}
    except (OSError, ValueError):
        return ""
    return f"[{failure.get('category', '?')}] {failure.get('message', '')}"[:200]


def checkpoint_paths(store, sha256: str, config, dataset: str) -> list[Path]:
    """Where a run's checkpoint would be: trusted runs' folder, and a sandboxed run's own."""
    from harness.engine.checkpoint import run_identity
    from harness.engine.runner import PROTOCOL_VERSION

    identity = run_identity(sha256, config, dataset, PROTOCOL_VERSION)
    return [store.root / "checkpoints" / f"{identity}.pt",  # a trusted run's
            store.root / "checkpoints" / "journals" / f"{identity}.json"]  # a sandboxed run's scores


def suite_plan(store, suite, precision: str = "fp32") -> list[tuple[str, str, int, str, list[Path]]]:
    """The runs of every entry registered to ``suite`` (hidden settings for final entries only)."""
    from harness.engine.runner import RunConfig
    from harness.execution.sweep import run_keys

    out = []
    for entry in sorted(store.entries(), key=lambda e: (e.kind != "baseline", e.name)):
        if entry.suite != suite.name:
            continue
        for setting, seed, key in run_keys(entry.sha256, suite, entry.final, precision):
            config = RunConfig("", setting.arch, setting.dataset, seed, suite.recipe,
                               suite.limit_train, suite.limit_test, precision=precision)
            out.append((entry.name, setting.key, seed, key,
                        checkpoint_paths(store, entry.sha256, config, setting.dataset)))
    return out


def study_plan(store, study, precision: str = "fp32") -> list[tuple[str, str, int, str, list[Path]]]:
    from harness.engine.runner import RunConfig
    from harness.protocol.studies import plan_study

    out = []
    for run in plan_study(study, store, precision):
        config = RunConfig("", run.setting.arch, run.setting.dataset, run.seed, study.recipe,
                           study.limit_train, study.limit_test, precision=precision)
        out.append((run.entry.name, run.setting.key, run.seed, run.key,
                    checkpoint_paths(store, run.sha256, config, run.setting.dataset)))
    return out

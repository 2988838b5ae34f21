"""``harness status``: where a suite or a study stands, read from the results store alone.

Each run an entry makes (a :class:`~harness.store.plan.PlannedRun`, planned by
:mod:`harness.store.plan`) is in one state:

- ``done`` / ``diverged``: a completed record exists (a diverged run is a result);
- ``running``: a worker holds its claim (:mod:`harness.store.claims`) and beat within ``STALE_S``;
- ``interrupted``: its claim went stale (the worker or its node died), or it left a checkpoint
  and no record: the next sweep resumes it;
- ``failed``: its latest record failed (with the category);
- ``missing``: nothing yet.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.protocol.spec import RunSpec
from harness.store.claims import STALE_S, claim_path
from harness.store.plan import PlannedRun
from harness.store.results import COMPLETED, ResultsStore

STATES = ("done", "diverged", "running", "interrupted", "failed", "missing")


@dataclass
class RunStatus:
    entry: str
    setting: str
    seed: int
    key: str
    state: str
    detail: str = ""
    point: dict[str, Any] | None = None  # a study grid's point (None outside a grid)


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


def run_states(store: ResultsStore, planned: Iterable[PlannedRun]) -> list[RunStatus]:
    """The state of each planned run, from the store's index, claims and checkpoints."""
    latest: dict[str, dict[str, Any]] = {}
    for line in store.index_lines().values():
        previous = latest.get(line["key"])
        if previous is None or (line["status"] in COMPLETED, line["run_id"]) >= \
                (previous["status"] in COMPLETED, previous["run_id"]):
            latest[line["key"]] = line
    now, out = time.time(), []
    for run in planned:
        entry, setting, seed, key = run.entry, run.setting.key, run.seed, run.key
        checkpoints = checkpoint_paths(store, run.spec)
        last = latest.get(key)
        if last is not None and last["status"] in COMPLETED:
            acc = last.get("best_acc")
            out.append(RunStatus(entry, setting, seed, key, "diverged" if last["status"] == "diverged"
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
        if last is not None:
            record = _failure(store, last["run_id"])
            out.append(RunStatus(entry, setting, seed, key, "failed", record))
            continue
        out.append(RunStatus(entry, setting, seed, key, "missing"))
    for status, run in zip(out, planned):
        status.point = dict(run.point) if run.point else None
    return out


def _failure(store, run_id: str) -> str:
    try:
        failure = json.loads((store.runs_dir / f"{run_id}.json").read_text()).get("failure") or {}
    except (OSError, ValueError):
        return ""
    return f"[{failure.get('category', '?')}] {failure.get('message', '')}"[:200]


def checkpoint_paths(store: ResultsStore, spec: RunSpec) -> list[Path]:
    """Where a run's checkpoint would be: a trusted run's, and a sandboxed run's journal."""
    return [store.root / "checkpoints" / f"{spec.digest()}.pt",
            store.root / "checkpoints" / "journals" / f"{spec.digest()}.json"]

"""``harness status``: where a suite or a study stands, read from the results store alone.

Planning is here too: every run an entry makes over a suite or study is a :class:`PlannedRun`
(its :class:`~harness.protocol.spec.RunSpec`, whose key the store knows runs by). Each is in one
state:

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

from harness.protocol.entries import sha256_file
from harness.protocol.spec import RunSpec
from harness.protocol.studies import Study, StudyEntry, Variant, point_label
from harness.protocol.suites import Setting, Suite
from harness.store.claims import STALE_S, claim_path, live_claims
from harness.store.results import COMPLETED, ResultsStore

STATES = ("done", "diverged", "running", "interrupted", "failed", "missing")


@dataclass
class PlannedRun:
    """One run an entry makes: its spec (sha256 set, ``planned``), and what the store says of it."""

    entry: str
    setting: Setting
    spec: RunSpec
    done: bool = False
    running: bool = False  # a worker elsewhere holds its claim
    point: tuple[tuple[str, Any], ...] = ()  # a study grid's axes that apply to it, and their values

    @property
    def key(self) -> str:
        return self.spec.key()

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def label(self) -> str:
        """The entry, with its grid point when it has one: ``SelectiveNorm [lr=0.1, p=0.3]``."""
        return point_label(self.entry, self.point)


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


def plan_entry(store: ResultsStore, entry: str, sha256: str, suite: Suite, final: bool, *,
               precision: str = "fp32", rerun: bool = False) -> list[PlannedRun]:
    """Every run of one entry over ``suite`` (hidden settings for a final entry only), and whether
    the store has it (``done``; never with ``rerun``) or a live worker holds it (``running``)."""
    return _plan([(entry, sha256, final, _one(suite))], store, suite, precision, rerun)


def plan_suite(store: ResultsStore, suite: Suite, precision: str = "fp32") -> list[PlannedRun]:
    """The runs of every entry registered to ``suite``: baselines first."""
    entries = sorted(store.entries(), key=lambda e: (e.kind != "baseline", e.name))
    return _plan([(e.name, e.sha256, e.final, _one(suite)) for e in entries
                  if e.suite == suite.name], store, suite, precision)


def plan_study(study: Study, store: ResultsStore, precision: str = "fp32") -> list[PlannedRun]:
    """Every (entry, grid point, setting, seed) of a study, keyed by the entries' files as they
    are now."""
    return _plan([(e.name, sha256_file(e.path), True, study.variants(e)) for e in study.entries],
                 store, study.as_suite(), precision)


def plan_study_entry(study: Study, entry: StudyEntry, sha256: str, store: ResultsStore, *,
                     precision: str = "fp32", rerun: bool = False) -> list[PlannedRun]:
    """The runs of one entry of a study, its file's bytes hashing to ``sha256``."""
    return _plan([(entry.name, sha256, True, study.variants(entry))], store, study.as_suite(),
                 precision, rerun)


def _one(suite: Suite) -> list[Variant]:
    return [Variant((), suite.recipe)]


def _plan(entries: list[tuple[str, str, bool, list[Variant]]], store: ResultsStore, suite: Suite,
          precision: str, rerun: bool = False) -> list[PlannedRun]:
    """The runs of (name, sha256, final, variants) entries, the store's index and claims read once."""
    done = set() if rerun else store.completed_keys()
    busy = live_claims(store.root)
    out = []
    for entry, sha256, final, variants in entries:
        for variant in variants:
            for setting in suite.settings_for(final):
                for seed in suite.seeds:
                    spec = RunSpec("", setting.arch, setting.dataset, seed, variant.recipe,
                                   suite.limit_train, suite.limit_test, precision, sha256=sha256,
                                   planned=True, params=variant.params)
                    key = spec.key()
                    out.append(PlannedRun(entry, setting, spec, key in done, key in busy,
                                          variant.point))
    return out


def study_records(study: Study, store: ResultsStore, precision: str = "fp32"
                  ) -> dict[tuple[str, str, tuple], list[dict[str, Any]]]:
    """(entry name, setting key, grid point) -> one record per seed that has any: of the records
    with its key, the latest completed one, else the latest. The point is the planned run's
    (``()`` without a grid)."""
    wanted = {run.key: run for run in plan_study(study, store, precision)}
    candidates: dict[str, list[dict[str, Any]]] = {}
    for line in store.index_lines().values():
        path = store.runs_dir / f"{line['run_id']}.json"
        if line["key"] in wanted and path.exists():
            record = store.read(path)  # None: not a record (skipped, in store.problems)
            if record is not None:
                candidates.setdefault(line["key"], []).append(record)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, run in wanted.items():
        if key in candidates:
            chosen = max(candidates[key], key=lambda r: (r["status"] in COMPLETED,
                                                         r.get("ended_at") or "", r["run_id"]))
            out.setdefault((run.entry, run.setting.key, run.point), []).append(chosen)
    return out

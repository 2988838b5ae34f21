"""Planning: every run an entry makes over a suite or a study, as a :class:`PlannedRun`.

A planned run carries its :class:`~harness.protocol.spec.RunSpec` (its key is what the store knows
runs by) and what the store says of it when planned: ``done`` (a completed record has its key; a
diverged run is a result) or ``running`` (a live worker's claim, :mod:`harness.store.claims`).
The sweeps (:mod:`harness.execution.sweep`) run what is neither; ``harness status``
(:mod:`harness.store.status`) says where each stands in more detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.protocol.entries import sha256_file
from harness.protocol.spec import RunSpec
from harness.protocol.studies import Study, StudyEntry, Variant, point_label
from harness.protocol.suites import Setting, Suite
from harness.store.claims import live_claims
from harness.store.results import COMPLETED, ResultsStore


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
    out: dict[tuple[str, str, tuple], list[dict[str, Any]]] = {}
    for key, run in wanted.items():
        if key in candidates:
            chosen = max(candidates[key], key=lambda r: (r["status"] in COMPLETED,
                                                         r.get("ended_at") or "", r["run_id"]))
            out.setdefault((run.entry, run.setting.key, run.point), []).append(chosen)
    return out

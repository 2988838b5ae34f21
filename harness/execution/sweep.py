"""Running an entry over a suite: every (setting, seed), skipping what the store already has.

``harness submit``, ``harness baselines run`` and ``harness study run`` are all this: each entry is
prepared (stored, vetted, planned), then the tasks of all of a command's entries run as one batch
(one pool of local workers, or one Slurm job array). A run whose key (submission
sha256, setting, seed, recipe, protocol version) already has a completed record is skipped, so an
interrupted sweep continues where it stopped and a changed file never reuses old records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.execution.checks import checks_in_worker
from harness.execution.local import LocalExecutor
from harness.execution.options import Execution
from harness.execution.task import Task
from harness.protocol.catalog import track_of
from harness.protocol.entries import params_label
from harness.protocol.studies import Study, StudyEntry, select_entries
from harness.protocol.suites import Suite
from harness.reporting import Reporter
from harness.store.plan import PlannedRun, plan_entry, plan_study_entry
from harness.store.results import ResultsStore
from harness.vetting.vet import Vetted, vet


class Executor(Protocol):
    """Where a batch of tasks runs: harness.execution.local.LocalExecutor (worker processes here),
    harness.execution.slurm.SlurmExecutor (a job array), or a test's stand-in. Returns one record
    per task, in order, or with ``detach`` what was submitted."""

    def run(self, tasks: list[Task], store: ResultsStore, *, reporter: Reporter | None = None,
            detach: bool = False, name: str = "harness") -> Any: ...


@dataclass
class SweepResult:
    entry: str
    ran: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    submitted: Any = None  # a detached cluster sweep: harness.execution.slurm.Submitted

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.ran if r["status"] == "failed"]

@dataclass
class PreparedSweep:
    """One entry's sweep, vetted and planned: the tasks still to run."""

    result: SweepResult
    tasks: list[Task]


@dataclass(frozen=True)
class SweepEntry:
    """What a command runs over a suite: ``source`` (a file, or a baseline's name) as entry
    ``name`` of ``kind`` (submission, baseline or study), with the hidden settings when ``final``.

    ``replace``: the entry name may change files (its history keeps the old one); ``rerun``: run
    again what already has a record; ``register=False`` and ``record_extra``: a study's runs (no
    leaderboard entry; the study named in each record); ``study``: plan that study's entry (its
    grid points) instead of the suite's settings."""

    source: str
    name: str
    kind: str
    suite: Suite
    final: bool = False
    replace: bool = False
    rerun: bool = False
    register: bool = True
    record_extra: dict[str, Any] | None = None
    study: tuple[Study, StudyEntry] | None = None


def vet_entry(store: ResultsStore, source: str, execution: Execution, tracks: tuple[str, ...],
              params: tuple[dict[str, Any], ...] = ({},)) -> Vetted:
    """Vet a file for runs on ``tracks`` with each of ``params`` (harness.vetting.vet): its checks
    in this process when trusted, in a sandboxed worker when untrusted."""
    isolation, vetting = execution.isolation, execution.vetting
    checks = checks_in_worker(store, isolation, vetting, source) if isolation.untrusted else None
    return vet(source, vetting, store, checks, tracks, params)


def prepare(store: ResultsStore, entry: SweepEntry, execution: Execution = Execution(),
            reporter: Reporter | None = None) -> PreparedSweep:
    """Store the file, register the entry, vet the layer, and plan every missing (setting, seed),
    or with ``entry.study`` every missing (grid point, setting, seed) of that study's entry.

    Vetting is :func:`vet_entry` (with each set of layer parameters the runs use); an entry name
    already taken by another file needs ``entry.replace``
    (harness.store.results.ResultsStore.register_entry). A run already done, or held by a live
    worker elsewhere (harness.store.claims), is skipped. Raises SubmissionError when the file is
    unusable or fails a fatal check.
    """
    suite, study = entry.suite, entry.study
    tracks = tuple(dict.fromkeys(track_of(s.arch) for s in suite.settings_for(entry.final)))
    params = (tuple({params_label(v.params): v.params for v in study[0].variants(study[1])}.values())
              if study else ({},))
    vetted = vet_entry(store, entry.source, execution, tracks, params)
    if entry.register:
        store.register_entry(entry.name, entry.kind, vetted.sha256, suite.name, entry.final,
                             str(vetted.path), replace=entry.replace)
    result = SweepResult(entry=entry.name)
    precision, rerun = execution.precision, entry.rerun
    planned = (plan_study_entry(*study, vetted.sha256, store, precision=precision, rerun=rerun)
               if study else plan_entry(store, entry.name, vetted.sha256, suite, entry.final,
                                        precision=precision, rerun=rerun))
    tasks = []
    for i, run in enumerate(planned, 1):
        if run.done or run.running:
            result.skipped.append(run)
            if reporter is not None:
                reporter.planned(run, i, len(planned), "done" if run.done else "running")
            continue
        spec = execution.apply(run.spec.with_(submission=str(vetted.copy)))
        extra = {"entry": entry.name, "entry_kind": entry.kind,
                 "submission_source": str(vetted.path), "scan": vetted.scan,
                 "suite": {**suite.describe(), "recipe_id": run.spec.recipe_id(),
                           "setting": run.setting.key, "hidden": run.setting.hidden,
                           "final": entry.final},
                 **(entry.record_extra or {})}
        tasks.append(Task(spec, f"{run.label} {run.setting.key} seed {run.seed}", extra,
                          vetted.checks_for(run.spec.layer_params), run, (i, len(planned))))
    return PreparedSweep(result, tasks)


def run_prepared(prepared: list[PreparedSweep], store: ResultsStore, executor: Executor, *,
                 detach: bool = False, name: str = "harness",
                 reporter: Reporter | None = None) -> list[SweepResult]:
    """Run the tasks of several prepared sweeps as one batch on ``executor``: one pool of local
    workers (a harness.execution.local.LocalExecutor), or one Slurm job array (a
    harness.execution.slurm.SlurmExecutor; with ``detach`` it returns once the array is
    submitted). Any object with the executors' ``run(tasks, store, *, reporter, detach, name)``
    will do."""
    tasks = [t for p in prepared for t in p.tasks]
    ran = executor.run(tasks, store, reporter=reporter, detach=detach, name=name)
    if not isinstance(ran, list):  # detached: every sweep with tasks shares the submission
        for p in prepared:
            if p.tasks:
                p.result.submitted = ran
        return [p.result for p in prepared]
    records = {id(task): record for task, record in zip(tasks, ran)}
    for p in prepared:
        p.result.ran = [records[id(task)] for task in p.tasks]
    return [p.result for p in prepared]


def local_executor(execution: Execution, jobs: int = 1) -> LocalExecutor:
    return LocalExecutor(jobs, execution.device, execution.isolation)


def sweep(store: ResultsStore, entry: SweepEntry, execution: Execution = Execution(), *,
          executor: Executor | None = None, detach: bool = False,
          reporter: Reporter | None = None) -> SweepResult:
    """Vet one entry and run every missing (setting, seed) of its suite: :func:`prepare`, then
    :func:`run_prepared` (on one local worker unless ``executor`` says otherwise). Each run
    executes in its own worker process under ``execution.isolation`` (timeout, memory limit, and
    the sandbox when untrusted)."""
    prepared = prepare(store, entry, execution, reporter)
    return run_prepared([prepared], store, executor or local_executor(execution), detach=detach,
                        name=entry.name, reporter=reporter)[0]


def study_entry(study: Study, entry: StudyEntry, rerun: bool = False) -> SweepEntry:
    """One entry of the study, as a sweep runs it: every setting as final (a study has no hidden
    half), no leaderboard entry, the study named in each record."""
    return SweepEntry(str(entry.path), entry.name, "study", study.as_suite(), final=True,
                      rerun=rerun, register=False,
                      record_extra={"study": {**study.describe(), "entry": entry.name}},
                      study=(study, entry))


def run_study(study: Study, store: ResultsStore, execution: Execution = Execution(), *,
              only: list[str] | None = None, rerun: bool = False, executor: Executor | None = None,
              reporter: Reporter | None = None) -> list[SweepResult]:
    """Prepare every entry (or those named in ``only``), then run all their runs as one batch.
    Returns one SweepResult per entry."""
    prepared = [prepare(store, study_entry(study, entry, rerun), execution, reporter)
                for entry in select_entries(study, only)]
    return run_prepared(prepared, store, executor or local_executor(execution),
                        name=f"study-{study.name}", reporter=reporter)

"""Running an entry over a suite: every (setting, seed), skipping what the store already has.

``harness submit``, ``harness baselines run`` and ``harness study run`` are all this: each entry is
prepared (stored, vetted, planned), then the tasks of all of a command's entries run as one batch
(one pool of local workers, or one Slurm job array). A run whose key (submission
sha256, setting, seed, recipe, protocol version) already has a completed record is skipped, so an
interrupted sweep continues where it stopped and a changed file never reuses old records.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.execution.local import LocalExecutor, vet_in_worker
from harness.execution.sandbox import sandbox_unavailable
from harness.execution.task import Isolation, Task
from harness.protocol.catalog import track_of
from harness.protocol.entries import SubmissionError, check_path, params_label, resolve
from harness.protocol.spec import RunError, SpeedOptions
from harness.protocol.studies import Study, StudyEntry, select_entries
from harness.protocol.suites import Suite
from harness.reporting import Reporter
from harness.store.results import ResultsStore
from harness.store.status import PlannedRun, plan_entry, plan_study_entry
from harness.vetting.check import preflight, refuse_on_fatal
from harness.vetting.scan import refusing, scan_file, summary
from harness.vetting.submission import load


@dataclass
class SweepResult:
    entry: str
    ran: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    submitted: Any = None  # a detached cluster sweep: harness.execution.slurm.Submitted

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.ran if r["status"] == "failed"]



SCAN_POLICIES = ("report", "refuse")


@dataclass(frozen=True)
class Vetting:
    """How a file is vetted: the scan policy (``report`` or ``refuse``) and ``--trust-code``."""

    scan_policy: str = "report"
    trust_code: bool = False


def scan_row(path: Path, shown: str, policy: str = "report",
             trust_code: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The static scan (harness.vetting.scan) as a check row and the record's ``scan``. With policy
    ``refuse``, a finding in code the harness runs raises SubmissionError (category
    ``refused``), unless ``trust_code``. ``shown`` is the file as the user named it."""
    if policy not in SCAN_POLICIES:
        raise ValueError(f"scan policy must be one of {SCAN_POLICIES}, got {policy!r}")
    findings = scan_file(path)
    if policy == "refuse" and refusing(findings) and not trust_code:
        raise SubmissionError(
            f"{shown}: refused by the static scan (--scan-policy refuse): "
            f"{summary(refusing(findings))}. A norm layer needs tensors and arithmetic only; if "
            "you have read this file and trust it, pass --trust-code", "refused")
    if findings:
        detail = summary(findings) + (" (allowed by --trust-code)" if trust_code and policy == "refuse"
                                      else " (for review; not refused)")
    else:
        detail = "no imports or names outside tensor arithmetic"
    row = {"name": "static-scan", "status": "warn" if refusing(findings) else "pass",
           "detail": detail[:4000], "fatal": False}
    scan = {"policy": policy, "trust_code": trust_code,
            "findings": [f.to_json() for f in findings[:200]]}
    return row, scan


@dataclass
class Vetted:
    """A submission that passed vetting: where it came from, its stored copy (what runs), and
    the check rows of each set of layer parameters it was checked with (the scan's row first)."""

    path: Path  # the file as the user named it, resolved
    copy: Path
    sha256: str
    checked: dict[str, list[dict[str, Any]]]  # params_label(params) -> rows
    scan: dict[str, Any]

    def checks_for(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.checked[params_label(params)]


def vet(store: ResultsStore, source: str, isolation: Isolation, trust_code: bool = False,
        scan_policy: str = "report", check_timeout: float = 10.0,
        tracks: tuple[str, ...] = ("cnn",), params: tuple[dict[str, Any], ...] = ({},)) -> Vetted:
    """Scan and pre-flight-check a submission on the layouts of ``tracks`` (those of the runs to
    come), its layer built with each of ``params`` (those of the runs to come), then keep it in
    the store (a refused file is not kept). Untrusted, this process never imports it: the checks
    run in a sandboxed worker, and their rows are the file's own account. Raises SubmissionError
    (messages name ``source``, as the user named the file, and the parameters) or RunError (no
    sandbox here)."""
    path = resolve(source).resolve()
    check_path(path)
    data = path.read_bytes()
    checked = {}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path.name  # exactly these bytes are vetted, then stored
        staged.write_bytes(data)
        row, scan = None, None
        for given in params:
            try:
                if row is None:
                    row, scan = scan_row(staged, source, scan_policy, trust_code)
                rows = _preflight_rows(staged, store, source, isolation, check_timeout, tracks, given)
            except SubmissionError as exc:
                raise SubmissionError(str(exc).replace(str(staged), source), exc.category) from None
            checked[params_label(given)] = [row, *rows]
    copy, digest = store.store_bytes(data)
    return Vetted(path, copy, digest, checked, scan)


def _preflight_rows(staged: Path, store: ResultsStore, source: str, isolation: Isolation,
                    check_timeout: float, tracks: tuple[str, ...],
                    params: dict[str, Any]) -> list[dict[str, Any]]:
    """The pre-flight check rows: in a sandboxed worker (untrusted), else in this process."""
    if not isolation.untrusted:
        return preflight(load(staged), check_timeout, source, tracks, params).to_json()["checks"]
    reason = sandbox_unavailable() if isolation.namespaces else None
    if reason:
        raise RunError(f"cannot isolate an untrusted run here: {reason}. Pass "
                       "--unsafe-no-namespaces to run it without the sandbox's file-system and "
                       "network isolation (resource limits and the filter still apply)")
    outcome = vet_in_worker(staged, store, isolation, shown=source, tracks=tracks, params=params)
    if "error" in outcome:
        raise SubmissionError(outcome["error"], outcome.get("category", "interface"))
    refuse_on_fatal(outcome["report"]["checks"], source, params)
    return outcome["report"]["checks"]


@dataclass
class PreparedSweep:
    """One entry's sweep, vetted and planned: the tasks still to run."""

    result: SweepResult
    tasks: list[Task]


def prepare(store: ResultsStore, source: str, name: str, kind: str, suite: Suite, final: bool, *,
            rerun: bool = False, device: str = "auto", data_root: str | None = None,
            download: bool = True, check_timeout: float = 10.0, precision: str = "fp32",
            speed: SpeedOptions | None = None, resume: bool = True,
            isolation: Isolation | None = None, trust_code: bool = False,
            scan_policy: str = "report", replace: bool = False,
            register: bool = True, record_extra: dict[str, Any] | None = None,
            study: tuple[Study, StudyEntry] | None = None,
            reporter: Reporter | None = None) -> PreparedSweep:
    """Store the file, register the entry, vet the layer, and plan every missing (setting, seed),
    or with ``study`` every missing (grid point, setting, seed) of that study's entry.

    Vetting is :func:`vet` (with each set of layer parameters the runs use); an entry name already
    taken by another file needs ``replace`` (harness.store.results.ResultsStore.register_entry).
    A study passes ``register=False`` (no leaderboard entry) and its ``record_extra``. A run
    already done, or held by a live worker elsewhere (harness.store.status claims), is skipped.
    Raises SubmissionError when the file is unusable or fails a fatal check.
    """
    isolation = isolation or Isolation(check_timeout=check_timeout)
    tracks = tuple(dict.fromkeys(track_of(s.arch) for s in suite.settings_for(final)))
    params = (tuple({params_label(v.params): v.params for v in study[0].variants(study[1])}.values())
              if study else ({},))
    vetted = vet(store, source, isolation, trust_code, scan_policy, check_timeout, tracks, params)
    path, copy, digest = vetted.path, vetted.copy, vetted.sha256
    if register:
        store.register_entry(name, kind, digest, suite.name, final, str(path), replace=replace)
    result = SweepResult(entry=name)
    planned = (plan_study_entry(*study, digest, store, precision=precision, rerun=rerun) if study
               else plan_entry(store, name, digest, suite, final, precision=precision, rerun=rerun))
    tasks = []
    for i, run in enumerate(planned, 1):
        if run.done or run.running:
            result.skipped.append(run)
            if reporter is not None:
                reporter.planned(run, i, len(planned), "done" if run.done else "running")
            continue
        spec = run.spec.with_(submission=str(copy), device=device, data_root=data_root,
                              download=download, speed=speed or SpeedOptions(), resume=resume)
        extra = {"entry": name, "entry_kind": kind,
                 "submission_source": str(path), "scan": vetted.scan,
                 "suite": {**suite.describe(), "recipe_id": run.spec.recipe_id(),
                           "setting": run.setting.key, "hidden": run.setting.hidden,
                           "final": final},
                 **(record_extra or {})}
        tasks.append(Task(spec, f"{run.label} {run.setting.key} seed {run.seed}", extra,
                          vetted.checks_for(run.spec.layer_params), run, (i, len(planned))))
    return PreparedSweep(result, tasks)


def run_prepared(prepared: list[PreparedSweep], store: ResultsStore, *, jobs: int = 1,
                 device: str = "auto", isolation: Isolation | None = None, executor=None,
                 detach: bool = False, name: str = "harness",
                 reporter: Reporter | None = None) -> list[SweepResult]:
    """Run the tasks of several prepared sweeps as one batch: one pool of local workers, or one
    Slurm job array (``executor``: a harness.execution.slurm.SlurmExecutor; with ``detach`` it
    returns once the array is submitted). Any object with the executors' ``run(tasks, store, *,
    reporter, detach, name)`` will do."""
    tasks = [t for p in prepared for t in p.tasks]
    executor = executor or LocalExecutor(jobs, device, isolation or Isolation())
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


def sweep(store: ResultsStore, source: str, name: str, kind: str, suite: Suite, final: bool, *,
          jobs: int = 1, executor=None, detach: bool = False, reporter: Reporter | None = None,
          **options) -> SweepResult:
    """Vet one entry and run every missing (setting, seed) of ``suite``: :func:`prepare`, then
    :func:`run_prepared`. Each run executes in its own worker process under ``isolation``
    (timeout, memory limit, and the sandbox when untrusted)."""
    prepared = prepare(store, source, name, kind, suite, final, reporter=reporter, **options)
    return run_prepared([prepared], store, jobs=jobs, device=options.get("device", "auto"),
                        isolation=options.get("isolation")
                        or Isolation(check_timeout=options.get("check_timeout", 10.0)),
                        executor=executor, detach=detach, name=name, reporter=reporter)[0]


def sweep_arguments(study: Study, entry: StudyEntry) -> dict[str, Any]:
    """What :func:`sweep` takes to run one entry of the study: every setting as
    final (a study has no hidden half), no leaderboard entry, the study named in each record."""
    return {"source": str(entry.path), "name": entry.name, "kind": "study",
            "suite": study.as_suite(), "final": True, "register": False,
            "record_extra": {"study": {**study.describe(), "entry": entry.name}},
            "study": (study, entry)}


def run_study(study: Study, store: ResultsStore, *, only: list[str] | None = None,
              **sweep_options) -> list:
    """Prepare every entry (or those named in ``only``), then run all their runs as one batch;
    ``sweep_options`` are those of :func:`sweep`. Returns one SweepResult per entry."""
    batch = {k: sweep_options.pop(k) for k in ("jobs", "executor", "detach") if k in sweep_options}
    reporter = sweep_options.pop("reporter", None)
    prepared = [prepare(store, **sweep_arguments(study, entry), reporter=reporter, **sweep_options)
                for entry in select_entries(study, only)]
    return run_prepared(prepared, store, device=sweep_options.get("device", "auto"),
                        isolation=sweep_options.get("isolation"), name=f"study-{study.name}",
                        reporter=reporter, **batch)

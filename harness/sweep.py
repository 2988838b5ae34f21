"""Running an entry over a suite: every (setting, seed), skipping what the store already has.

``harness submit``, ``harness baselines run`` and ``harness study run`` are all this: each entry is
prepared (stored, vetted, planned), then the tasks of all of a command's entries run as one batch
(one pool of local workers, or one Slurm job array). A run whose key (submission
sha256, setting, seed, recipe, protocol version) already has a completed record is skipped, so an
interrupted sweep continues where it stopped and a changed file never reuses old records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.check import preflight, refuse_on_fatal
from harness.executors import Isolation, LocalExecutor, Task, vet_in_worker
from harness.fast import SpeedOptions
from harness.runner import PROTOCOL_VERSION, RunConfig, RunError
from harness.sandbox import namespaces_unavailable
from harness.status import live_claims
from harness.scan import scan_file
from harness.store import ResultsStore, make_key
from harness.submission import SubmissionError, check_path, load, resolve
from harness.suites import Setting, Suite


@dataclass
class PlannedRun:
    setting: Setting
    seed: int
    key: str
    done: bool
    running: bool = False  # a worker elsewhere holds its claim (harness.status)


@dataclass
class SweepResult:
    entry: str
    ran: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    submitted: Any = None  # a detached cluster sweep: harness.cluster.Submitted

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.ran if r["status"] == "failed"]


def run_keys(sha256: str, suite: Suite, final: bool,
             precision: str = "fp32") -> list[tuple[Setting, int, str]]:
    """Every (setting, seed) an entry of ``suite`` runs, with its run key."""
    return [(setting, seed, make_key(sha256, setting.arch, setting.dataset, seed, suite.recipe_id(),
                                     PROTOCOL_VERSION, precision))
            for setting in suite.settings_for(final) for seed in suite.seeds]


def plan(store: ResultsStore, sha256: str, suite: Suite, final: bool, rerun: bool = False,
         precision: str = "fp32") -> list[PlannedRun]:
    done = set() if rerun else store.completed_keys()
    busy = live_claims(store.root)
    return [PlannedRun(setting, seed, key, key in done, key in busy)
            for setting, seed, key in run_keys(sha256, suite, final, precision)]


RunHook = Callable[[PlannedRun, int, int], None]


def scan_row(path: Path, trust_code: bool) -> dict[str, Any]:
    """The static scan (harness.scan) as a check row; raises SubmissionError (category
    ``refused``) on a finding unless ``trust_code``."""
    findings = scan_file(path)
    if findings and not trust_code:
        listed = "; ".join(f"line {f.line}: {f.what}" for f in findings[:8])
        more = f" (and {len(findings) - 8} more)" if len(findings) > 8 else ""
        raise SubmissionError(
            f"{path}: refused by the static scan: {listed}{more}. A norm layer needs tensors and "
            "arithmetic only; if you trust this file, pass --trust-code", "refused")
    detail = ("; ".join(f"line {f.line}: {f.what}" for f in findings) + " (allowed by --trust-code)"
              if findings else "no imports or names outside tensor arithmetic")
    return {"name": "static-scan", "status": "warn" if findings else "pass", "detail": detail,
            "fatal": False}


def vet_untrusted(path: Path, store: ResultsStore, isolation: Isolation,
                  source: str, trust_code: bool) -> list[dict[str, Any]]:
    """Static scan, then the pre-flight checks in a sandboxed worker; this process never imports
    the file. Returns the check rows; raises SubmissionError when the file is refused."""
    row = scan_row(path, trust_code)
    reason = namespaces_unavailable() if isolation.namespaces else None
    if reason:
        raise RunError(f"cannot isolate an untrusted run here: {reason}. Pass "
                       "--unsafe-no-namespaces to run it without network and file-system "
                       "isolation (resource limits and the process filter still apply)")
    outcome = vet_in_worker(path, store, isolation)
    if "error" in outcome:
        raise SubmissionError(outcome["error"], outcome.get("category", "interface"))
    checks = outcome["report"]["checks"]
    refuse_on_fatal(checks, source)
    return [row, *checks]


def admit_untrusted(store: ResultsStore, source: str, isolation: Isolation,
                    trust_code: bool) -> tuple[Path, Path, str, list[dict[str, Any]]]:
    """Store an untrusted file (never importing it) and vet it; return (original path, stored
    copy, sha256, check rows)."""
    path = resolve(source).resolve()
    check_path(path)
    copy, digest = store.store_submission(path)
    return path, copy, digest, vet_untrusted(copy, store, isolation, source, trust_code)


@dataclass
class PreparedSweep:
    """One entry's sweep, vetted and planned: the tasks still to run, and where their records go."""

    result: SweepResult
    tasks: list[Task]
    submission: Any  # the loaded submission, for in-process ``execute`` (tests); None when untrusted
    runs: dict[int, tuple[PlannedRun, int]]  # id(task) -> (its planned run, its 1-based number)
    total: int
    on_run: RunHook | None = None
    on_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None


def prepare(store: ResultsStore, source: str, name: str, kind: str, suite: Suite, final: bool, *,
            rerun: bool = False, device: str = "auto", data_root: str | None = None,
            download: bool = True, check_timeout: float = 10.0, precision: str = "fp32",
            speed: SpeedOptions | None = None, resume: bool = True,
            isolation: Isolation | None = None, trust_code: bool = False,
            register: bool = True, record_extra: dict[str, Any] | None = None,
            on_run: RunHook | None = None, on_skip: RunHook | None = None,
            on_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None) -> PreparedSweep:
    """Store the file, register the entry, vet the layer, and plan every missing (setting, seed).

    Untrusted (``isolation.untrusted``), this process never imports the file: the static scan
    refuses it unless ``trust_code``, and the checks run in a sandboxed worker. A study passes
    ``register=False`` (no leaderboard entry) and its ``record_extra``. A run already done, or
    held by a live worker elsewhere (harness.status claims), is skipped. Raises SubmissionError
    when the file is unusable or fails a fatal check.
    """
    isolation = isolation or Isolation(check_timeout=check_timeout)
    if isolation.untrusted:
        path, copy, digest, checks = admit_untrusted(store, source, isolation, trust_code)
        submission = None
    else:
        original = load(source)
        path = original.path
        copy, digest = store.store_submission(original.path)
        submission = load(copy)  # train exactly the stored bytes
        report = preflight(submission, check_timeout, source)
        checks = [scan_row(copy, trust_code=True), *report.to_json()["checks"]]
    if register:
        store.register_entry(name, kind, digest, suite.name, final, str(path))
    result = SweepResult(entry=name)
    planned = plan(store, digest, suite, final, rerun, precision)
    tasks, runs = [], {}
    for i, run in enumerate(planned, 1):
        if run.done or run.running:
            result.skipped.append(run)
            if on_skip:
                on_skip(run, i, len(planned))
            continue
        config = RunConfig(submission=str(copy), arch=run.setting.arch, dataset=run.setting.dataset,
                           seed=run.seed, recipe=suite.recipe, limit_train=suite.limit_train,
                           limit_test=suite.limit_test, device=device, data_root=data_root,
                           download=download, precision=precision, speed=speed or SpeedOptions(),
                           resume=resume)
        extra = {"entry": name, "entry_kind": kind,
                 "submission_source": str(path),
                 "suite": {**suite.describe(), "setting": run.setting.key,
                           "hidden": run.setting.hidden, "final": final},
                 **(record_extra or {})}
        task = Task(config, f"{name} {run.setting.key} seed {run.seed}", digest, extra, checks)
        tasks.append(task)
        runs[id(task)] = (run, i)
    return PreparedSweep(result, tasks, submission, runs, len(planned), on_run, on_done)


def run_prepared(prepared: list[PreparedSweep], store: ResultsStore, *, jobs: int = 1,
                 device: str = "auto", isolation: Isolation | None = None, executor=None,
                 detach: bool = False, name: str = "harness",
                 execute: Callable[..., tuple[dict[str, Any], Any]] | None = None,
                 echo: Callable[[str], None] | None = None) -> list[SweepResult]:
    """Run the tasks of several prepared sweeps as one batch: one pool of local workers, or one
    Slurm job array (``executor``: a harness.cluster.SlurmExecutor; with ``detach`` it returns
    once the array is submitted). ``execute`` instead runs each task in this process (tests)."""
    owner = {id(task): p for p in prepared for task in p.tasks}

    def started(task: Task) -> None:
        p = owner[id(task)]
        if p.on_run:
            run, i = p.runs[id(task)]
            p.on_run(run, i, p.total)

    def done(task: Task, record: dict[str, Any]) -> None:
        p = owner[id(task)]
        if p.on_done:
            p.on_done(p.runs[id(task)][0], record)

    if execute is not None:  # in process: each entry with its own loaded submission
        batches = [(p.tasks, {"execute": execute, "submission": p.submission}) for p in prepared]
    else:
        batches = [([t for p in prepared for t in p.tasks], {})]
    executor = executor or LocalExecutor(jobs, device, isolation or Isolation())
    if detach or not isinstance(executor, LocalExecutor):
        batches = [(tasks, {**kw, "detach": detach, "name": name}) for tasks, kw in batches]
    records: dict[int, dict[str, Any]] = {}
    for tasks, kw in batches:
        ran = executor.run(tasks, store, on_start=started, on_done=done, echo=echo, **kw)
        if not isinstance(ran, list):  # detached: every sweep with tasks shares the submission
            for p in prepared:
                if p.tasks:
                    p.result.submitted = ran
            continue
        records.update((id(task), record) for task, record in zip(tasks, ran))
    for p in prepared:
        if p.result.submitted is None:
            p.result.ran = [records[id(task)] for task in p.tasks]
    return [p.result for p in prepared]


def sweep(store: ResultsStore, source: str, name: str, kind: str, suite: Suite, final: bool, *,
          jobs: int = 1, executor=None, detach: bool = False,
          execute: Callable[..., tuple[dict[str, Any], Any]] | None = None,
          echo: Callable[[str], None] | None = None, **options) -> SweepResult:
    """Vet one entry and run every missing (setting, seed) of ``suite``: :func:`prepare`, then
    :func:`run_prepared`. Each run executes in its own worker process under ``isolation``
    (timeout, memory limit, and the sandbox when untrusted)."""
    prepared = prepare(store, source, name, kind, suite, final, **options)
    return run_prepared([prepared], store, jobs=jobs, device=options.get("device", "auto"),
                        isolation=options.get("isolation")
                        or Isolation(check_timeout=options.get("check_timeout", 10.0)),
                        executor=executor, detach=detach, name=name, execute=execute,
                        echo=echo)[0]

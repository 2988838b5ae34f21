"""Running an entry over a suite: every (setting, seed), skipping what the store already has.

``harness submit`` and ``harness baselines run`` are both this loop. A run whose key (submission
sha256, setting, seed, recipe, protocol version) already has a completed record is skipped, so an
interrupted sweep continues where it stopped and a changed file never reuses old records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from harness.check import preflight
from harness.executors import LocalExecutor, Task
from harness.fast import SpeedOptions
from harness.runner import PROTOCOL_VERSION, RunConfig, run_eval
from harness.store import ResultsStore, make_key
from harness.submission import load
from harness.suites import Setting, Suite


@dataclass
class PlannedRun:
    setting: Setting
    seed: int
    key: str
    done: bool


@dataclass
class SweepResult:
    entry: str
    ran: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.ran if r["status"] == "failed"]


def plan(store: ResultsStore, sha256: str, suite: Suite, final: bool, rerun: bool = False,
         precision: str = "fp32") -> list[PlannedRun]:
    done = set() if rerun else store.completed_keys()
    runs = []
    for setting in suite.settings_for(final):
        for seed in suite.seeds:
            key = make_key(sha256, setting.arch, setting.dataset, seed, suite.recipe_id(),
                           PROTOCOL_VERSION, precision)
            runs.append(PlannedRun(setting, seed, key, key in done))
    return runs


RunHook = Callable[[PlannedRun, int, int], None]


def sweep(store: ResultsStore, source: str, name: str, kind: str, suite: Suite, final: bool, *,
          rerun: bool = False, device: str = "auto", data_root: str | None = None,
          download: bool = True, check_timeout: float = 10.0, precision: str = "fp32",
          speed: SpeedOptions | None = None, jobs: int = 1, resume: bool = True,
          execute: Callable[..., tuple[dict[str, Any], Any]] = run_eval,
          on_run: RunHook | None = None, on_skip: RunHook | None = None,
          on_done: Callable[[PlannedRun, dict[str, Any]], None] | None = None) -> SweepResult:
    """Store the file, register the entry, vet the layer, then run every missing (setting, seed).

    ``jobs`` > 1 runs them in worker processes (see :mod:`harness.executors`); otherwise
    ``execute`` runs each in this process (the CLI passes one that draws a progress bar). Raises
    SubmissionError when the file is unusable or fails a fatal check.
    """
    original = load(source)
    copy, digest = store.store_submission(original.path)
    submission = load(copy)  # train exactly the stored bytes
    report = preflight(submission, check_timeout, source)
    store.register_entry(name, kind, digest, suite.name, final, str(original.path))
    checks = report.to_json()["checks"]
    result = SweepResult(entry=name)
    planned = plan(store, digest, suite, final, rerun, precision)
    tasks, by_task = [], {}
    for i, run in enumerate(planned, 1):
        if run.done:
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
                 "submission_source": str(original.path),
                 "suite": {**suite.describe(), "setting": run.setting.key,
                           "hidden": run.setting.hidden, "final": final}}
        task = Task(config, f"{name} {run.setting.key} seed {run.seed}", digest, extra, checks)
        tasks.append(task)
        by_task[id(task)] = (run, i)

    def started(task: Task) -> None:
        if on_run:
            run, i = by_task[id(task)]
            on_run(run, i, len(planned))

    def done(task: Task, record: dict[str, Any]) -> None:
        if on_done:
            on_done(by_task[id(task)][0], record)

    result.ran = LocalExecutor(jobs, device).run(tasks, store, execute=execute, submission=submission,
                                                 on_start=started, on_done=done)
    return result

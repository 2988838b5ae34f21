"""An executor for tests: each task in this process, one after another (trusted code only).

Production executors run tasks in worker processes (harness.execution.local) or Slurm arrays;
tests that check a sweep's bookkeeping hand the same tasks to a function instead: ``execute(spec,
results_root, *, submission, checks, extra) -> (record, path)``, ``run_eval``'s signature.
"""

from __future__ import annotations

from harness.vetting.submission import load


class InProcess:
    def __init__(self, execute):
        self.execute = execute

    def run(self, tasks, store, *, reporter=None, detach=False, name="harness"):
        records = []
        for task in tasks:
            task.report_started(reporter)
            record, _ = self.execute(task.spec, store.root, submission=load(task.spec.submission),
                                     checks=task.checks, extra=task.extra)
            store.index(record)
            task.report_finished(reporter, record)
            records.append(record)
        return records

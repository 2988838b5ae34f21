"""harness submit's loop, with a fake executor: skip what is done, continue after a crash."""

import pytest

from harness.errors import SubmissionError
from harness.execution.sweep import SweepEntry, sweep
from harness.protocol.suites import load_suite
from harness.reporting import Reporter
from harness.store.record import write_json_atomic
from harness.store.results import EntryTaken, ResultsStore

from conftest import FIXTURES
from inprocess import InProcess
from records import make_record

SMOKE = load_suite("smoke")


class FakeExecutor:
    """Writes a fabricated record instead of training; can be told to crash at the n-th run."""

    def __init__(self, crash_at: int | None = None, status: str = "ok"):
        self.calls, self.crash_at, self.status = [], crash_at, status

    def __call__(self, config, root, *, submission, checks, extra):
        self.calls.append((config.arch, config.dataset, config.seed))
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise KeyboardInterrupt
        record = make_record(extra["entry"], submission.sha256, f"{config.arch}-{config.dataset}",
                             config.seed, 70.0, kind=extra["entry_kind"], status=self.status)
        record["checks"] = checks
        path = write_json_atomic(root / "runs" / f"{record['run_id']}.json", record)
        return record, path


def norm_file(tmp_path, tail=""):
    path = tmp_path / "mine.py"
    path.write_text(f"from torch import nn\n\n\nclass CustomNorm(nn.BatchNorm2d):\n    pass\n{tail}")
    return path


def test_public_then_final_then_nothing_left(tmp_path):
    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    first = FakeExecutor()
    result = sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(first))
    assert first.calls == [("resnet20", "digits", 0), ("resnet20", "digits", 1)]
    assert len(result.ran) == 2 and not result.skipped
    final = FakeExecutor()
    result = sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True), executor=InProcess(final))
    assert final.calls == [("resnet56", "digits", 0), ("resnet56", "digits", 1)]  # hidden only now
    assert len(result.skipped) == 2
    again = FakeExecutor()
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True), executor=InProcess(again))
    assert again.calls == []
    rerun = FakeExecutor()
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True, rerun=True),
          executor=InProcess(rerun))
    assert len(rerun.calls) == 4
    (entry,) = store.entries()
    assert entry.final and (tmp_path / "res" / "submissions" / f"{entry.sha256}.py").exists()


def test_interrupted_sweep_continues_where_it_stopped(tmp_path):
    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    crashing = FakeExecutor(crash_at=3)
    with pytest.raises(KeyboardInterrupt):
        sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True), executor=InProcess(crashing))
    resumed = FakeExecutor()
    result = sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True), executor=InProcess(resumed))
    assert resumed.calls == [("resnet56", "digits", 0), ("resnet56", "digits", 1)]
    assert len(result.skipped) == 2


def test_a_changed_file_never_reuses_old_records(tmp_path):
    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(FakeExecutor()))
    norm_file(tmp_path, tail="# changed\n")
    changed = FakeExecutor()
    with pytest.raises(EntryTaken):  # the name is the first file's; another needs --replace
        sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(changed))
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False, replace=True),
          executor=InProcess(changed))
    assert len(changed.calls) == 2


def test_failed_runs_are_retried(tmp_path):
    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    result = sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False),
                   executor=InProcess(FakeExecutor(status="failed")))
    assert len(result.failed) == 2
    retry = FakeExecutor()
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(retry))
    assert len(retry.calls) == 2


def test_a_layer_failing_a_fatal_check_is_refused_before_any_run(tmp_path):
    executor = FakeExecutor()
    with pytest.raises(SubmissionError, match="check 'dtype' failed"):
        sweep(ResultsStore(tmp_path), SweepEntry(str(FIXTURES / "wrong_dtype.py"), "bad", "submission",
                                                 SMOKE, final=False), executor=InProcess(executor))
    assert executor.calls == []


def test_runs_train_the_stored_copy(tmp_path):
    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    seen = []

    def execute(config, root, *, submission, checks, extra):
        seen.append((config.submission, submission.path, extra["submission_source"]))
        return FakeExecutor()(config, root, submission=submission, checks=checks, extra=extra)

    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(execute))
    copy = str(next((tmp_path / "res" / "submissions").glob("*.py")))
    assert all(c == copy and str(p) == copy and s == str(src) for c, p, s in seen)


class BatchRecorder:
    """A stand-in cluster executor: records each batch it is given and fabricates the records."""

    def __init__(self):
        self.batches = []

    def run(self, tasks, store, *, reporter, detach, name):
        self.batches.append(([t.label for t in tasks], name, detach))
        records = []
        for task in tasks:
            task.report_started(reporter)
            c = task.spec
            record = make_record(task.extra["entry"], task.spec.sha256, f"{c.arch}-{c.dataset}", c.seed,
                                 70.0, kind=task.extra["entry_kind"])
            store.add(record)
            task.report_finished(reporter, record)
            records.append(record)
        return records


def test_a_commands_entries_run_as_one_batch_and_their_records_go_back_to_each(tmp_path):
    from harness.execution.sweep import prepare, run_prepared

    store = ResultsStore(tmp_path)
    done = {"batch_norm": [], "group_norm": []}

    class Finished(Reporter):
        def finished(self, run, record):
            done[run.entry].append(run.seed)

    prepared = [prepare(store, SweepEntry(name, name, "baseline", SMOKE, True)) for name in done]
    executor = BatchRecorder()
    results = run_prepared(prepared, store, executor, name="baselines-smoke",
                           reporter=Finished())
    runs = len(SMOKE.settings_for(True)) * len(SMOKE.seeds)
    [(labels, name, detach)] = executor.batches  # one array for the whole command
    assert len(labels) == 2 * runs and name == "baselines-smoke" and not detach
    for result in results:
        assert len(result.ran) == runs and {r["entry"] for r in result.ran} == {result.entry}
        assert sorted(done[result.entry]) == sorted(SMOKE.seeds * len(SMOKE.settings_for(True)))
    # Nothing left: a second command submits nothing.
    again = [prepare(store, SweepEntry(name, name, "baseline", SMOKE, True)) for name in done]
    assert all(not p.tasks and len(p.result.skipped) == runs for p in again)
    assert [r.ran for r in run_prepared(again, store, executor)] == [[], []]


def test_a_sweeps_json_summary_names_what_ran_and_what_was_skipped(tmp_path):
    import json

    from harness.cli.sweeps import summary_json

    store, src = ResultsStore(tmp_path / "res"), norm_file(tmp_path)
    sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=False), executor=InProcess(FakeExecutor()))
    result = sweep(store, SweepEntry(str(src), "mine", "submission", SMOKE, final=True),
                   executor=InProcess(FakeExecutor(status="failed")))
    summary = json.loads(json.dumps(summary_json(result)))
    assert summary["entry"] == "mine" and summary["submitted"] is None
    assert [(r["setting"], r["status"]) for r in summary["ran"]] == [("resnet56-digits", "failed")] * 2
    assert {(s["setting"], s["why"]) for s in summary["skipped"]} == {("resnet20-digits", "done")}

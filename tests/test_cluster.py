"""The cluster executor's options. The smoke suite through submitit's real code path, with a run
killed mid-way and resumed, is tests/test_end_to_end.py."""

import pytest
from click.testing import CliRunner

from harness.cli import EXIT_USAGE, main
from harness.execution.slurm import ClusterError, SlurmExecutor, SlurmOptions

pytest.importorskip("submitit")


def test_options_from_a_file_and_the_command_line(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\ntime_min = 90\ngpus = 2\naccount = "lab"\n')
    options = SlurmOptions.from_sources(str(config), {"gpus": 4, "cpus": None})
    assert (options.partition, options.time_min, options.gpus, options.cpus) == ("gpu", 90, 4, 8)
    params = options.submitit_parameters("entry")
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 4
    assert params["timeout_min"] == 90 and params["slurm_array_parallelism"] == 64
    assert params["slurm_additional_parameters"] == {"account": "lab"}
    config.write_text("gpu = 1\n")
    with pytest.raises(ClusterError, match="unknown key"):
        SlurmOptions.from_sources(str(config), {})
    with pytest.raises(ClusterError, match="time_min must be at least 1"):
        SlurmOptions(time_min=0)
    # The worker's own limit stays inside the job's, so the harness records a timeout itself.
    executor = SlurmExecutor(SlurmOptions(time_min=10, mem_gb=2), backend="submitit-local")
    assert executor.isolation.timeout_s == 600 - 120
    assert executor.isolation.memory_bytes == int(0.9 * 2 * 2**30)


def test_detach_needs_a_cluster_executor(tmp_path):
    result = CliRunner().invoke(main, ["submit", "batch_norm", "--name", "x", "--detach",
                                       "--results", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "--detach needs a cluster executor" in result.output


def test_threads_are_for_local_workers(tmp_path):
    result = CliRunner().invoke(main, ["submit", "batch_norm", "--name", "x", "--threads", "2",
                                       "--executor", "slurm", "--results", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "--threads is for local workers" in result.output


def _task():
    from harness.execution.task import Task
    from harness.protocol.spec import RunSpec

    config = RunSpec("sub/abc.py", "resnet20", "digits", seed=1, sha256="a" * 64, planned=True)
    return Task(config, "e resnet20-digits seed 1",
                {"entry": "e", "suite": {"name": "smoke", "recipe_id": "r1",
                                         "setting": "resnet20-digits"}}, [])


def test_a_node_that_cannot_sandbox_fails_the_run_saying_so(tmp_path, monkeypatch):
    from harness.execution import sandbox
    from harness.execution import slurm as cluster
    from harness.execution.options import Isolation
    from harness.store.results import ResultsStore

    monkeypatch.setattr(sandbox, "sandbox_unavailable", lambda: "no user namespaces")
    monkeypatch.setattr(cluster.signal, "signal", lambda *a: None)  # leave pytest's handlers be
    record = cluster.run_on_node(_task(), str(tmp_path), 0, Isolation(untrusted=True))
    assert record["failure"]["category"] == "crashed"
    assert "cannot sandbox an untrusted run: no user namespaces" in record["failure"]["message"]
    assert [r["run_id"] for r in ResultsStore(tmp_path).records()] == [record["run_id"]]


class _Job:
    """What the executor reads of a submitit job: an id, done(), its result file."""

    def __init__(self, job_id, folder, record=None):
        self.job_id, self.record, self.state = job_id, record, "UNKNOWN"
        self.paths = type("Paths", (), {"result_pickle": folder / f"{job_id}_result.pkl"})()

    def done(self):
        return self.record is not None

    def result(self):
        return self.record


def test_a_job_that_left_the_queue_without_a_result_is_recorded_not_waited_for(tmp_path,
                                                                                monkeypatch):
    """Without Slurm accounting, sacct cannot say a cancelled job ended; squeue can."""
    from harness.store.results import ResultsStore

    finished = {"run_id": "r-ok", "status": "ok"}
    jobs = [_Job("7_0", tmp_path, finished), _Job("7_1", tmp_path)]
    executor = SlurmExecutor(SlurmOptions(), backend="slurm", poll_s=0)
    monkeypatch.setattr(executor, "submit", lambda tasks, store, name: (jobs, tmp_path))
    polls = []
    monkeypatch.setattr(executor, "_queued", lambda pending: polls.append(1) or set())
    store = ResultsStore(tmp_path / "results")
    records = executor.run([_task(), _task()], store)
    assert records[0] is finished
    assert records[1]["failure"]["category"] == "crashed"
    assert "cluster job 7_1 ended without a record (it left the queue" in records[1]["failure"]["message"]
    assert len(polls) == 3  # not on the first poll it is missing from: squeue may lag
    assert [r["run_id"] for r in store.records()] == [records[1]["run_id"]]

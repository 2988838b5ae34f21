"""Executors: --jobs N worker processes, spread over GPUs, records kept whatever a worker does."""

import dataclasses

import pytest

from harness.engine.device import usable_cpus
from harness.engine.runner import run_eval
from harness.execution.local import LocalExecutor, visible_gpus, worker_slots
from harness.execution.options import Execution
from harness.execution.sweep import SweepEntry, local_executor, sweep
from harness.execution.task import Task, crash_record
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec, SpeedOptions
from harness.protocol.suites import load_suite
from harness.store.plan import plan_entry
from harness.store.record import strip_timings
from harness.store.results import ResultsStore, run_key

from conftest import FIXTURES, ROOT
from inprocess import InProcess

SELECTIVE = str(ROOT / "submissions" / "selective_norm.py")


def test_slots_per_gpu_and_threads_shared_out():
    slots = worker_slots(2, "auto", ["0", "3"], cpus=16)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "3", "3"]
    assert {s["OMP_NUM_THREADS"] for s in slots} == {"4"}
    pinned = worker_slots(3, "cuda:1", ["0", "1"], cpus=16)
    assert len(pinned) == 3 and all("CUDA_VISIBLE_DEVICES" not in s for s in pinned)
    cpu = worker_slots(2, "cpu", ["0"], cpus=2)
    assert len(cpu) == 2 and all(s["OMP_NUM_THREADS"] == "1" for s in cpu)
    no_gpu = worker_slots(4, "auto", [], cpus=2)
    assert len(no_gpu) == 4 and all(s["OMP_NUM_THREADS"] == "1" for s in no_gpu)
    chosen = worker_slots(2, "cpu", [], cpus=16, threads=3)  # --threads: beside other work
    assert [s["OMP_NUM_THREADS"] for s in chosen] == ["3", "3"]


def test_usable_cpus_follow_the_affinity_mask():
    import os

    assert usable_cpus() == len(os.sched_getaffinity(0)) >= 1
    with pytest.raises(ValueError):
        LocalExecutor(2, "cpu", threads=0)


@pytest.mark.parametrize("env, expected", [("", []), ("-1", []), ("2,3", ["2", "3"]),
                                           ("GPU-abc", ["GPU-abc"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def test_config_survives_the_trip_to_a_worker():
    config = RunSpec("x.py", "resnet20", "digits", seed=3, recipe=Recipe(epochs=2),
                       limit_train=10, precision="bf16",
                       speed=SpeedOptions(compile=True, compile_backend="aot_eager"))
    assert RunSpec.from_json(config.to_json()) == config


def test_crash_record_is_a_failed_record_with_its_key():
    config = RunSpec("sub/abc.py", "resnet20", "digits", seed=1, sha256="a" * 64, planned=True)
    extra = {"entry": "e", "suite": {"name": "smoke", "recipe_id": config.recipe_id(),
                                     "setting": "resnet20-digits"}}
    record = crash_record(Task(config, "e", extra), "crashed", "exit 9", "tail")
    assert record["status"] == "failed" and record["failure"]["category"] == "crashed"
    assert run_key(record) == config.key()
    assert run_key(record).startswith("a" * 64 + f"|resnet20|digits|1|{config.recipe_id()}|")


def tiny_suite():
    return dataclasses.replace(load_suite("smoke"), settings=load_suite("smoke").settings[:1],
                               recipe=Recipe(epochs=1, batch_size=32), limit_train=96,
                               limit_test=64)


@pytest.mark.slow
def test_jobs_give_the_records_of_a_sequential_sweep(tmp_path, monkeypatch):
    """Two workers (1 thread each, as they get on 2 cores) write the records that the same runs,
    one after another in this process with 1 thread, write: the same numbers, bit for bit."""
    import torch

    suite = tiny_suite()
    entry, cpu = SweepEntry(SELECTIVE, "sel", "submission", suite), Execution(device="cpu")
    parallel = sweep(ResultsStore(tmp_path / "par"), entry, cpu, executor=local_executor(cpu, 2))
    torch.set_num_threads(1)
    sequential = sweep(ResultsStore(tmp_path / "seq"), entry, cpu,
                       executor=InProcess(run_eval))  # in this process
    assert [r["status"] for r in parallel.ran] == ["ok", "ok"]

    def comparable(r):
        r = strip_timings(r)
        for k in ("run_id", "started_at", "ended_at", "environment", "peak_memory"):
            r.pop(k, None)
        r["submission"].pop("path")
        r["config"].pop("data_root", None)
        return r

    for par, seq in zip(parallel.ran, sequential.ran):
        par, seq = comparable(par), comparable(seq)
        assert {k: (par.get(k), seq.get(k)) for k in set(par) | set(seq)
                if par.get(k) != seq.get(k)} == {}
    assert len(list((tmp_path / "par" / "logs").glob("*.log"))) == 2
    again = sweep(ResultsStore(tmp_path / "par"), entry, cpu, executor=local_executor(cpu, 2))
    assert not again.ran and len(again.skipped) == 2


@pytest.mark.slow
def test_a_worker_that_dies_is_recorded_and_the_others_kept(tmp_path):
    store = ResultsStore(tmp_path / "res")
    cpu = Execution(device="cpu")
    result = sweep(store, SweepEntry(str(FIXTURES / "dies_in_worker.py"), "dies", "submission",
                                     tiny_suite()), cpu, executor=local_executor(cpu, 2))
    by_seed = {r["config"]["seed"]: r for r in result.ran}
    assert by_seed[0]["status"] == "ok" and by_seed[0]["best_acc"] is not None
    assert by_seed[1]["status"] == "failed"
    assert by_seed[1]["failure"]["category"] == "crashed"
    assert "exited with code 9" in by_seed[1]["failure"]["message"]
    lines = store.index_lines()
    assert sorted(line["status"] for line in lines.values()) == ["failed", "ok"]
    # The failed run is retried by the next submit; the finished one is not.
    left = plan_entry(store, "e", by_seed[0]["submission"]["sha256"], tiny_suite(), False)
    assert [r.seed for r in left if not r.done] == [1]


def test_jobs_option_on_the_cli():
    from click.testing import CliRunner

    from harness.cli import main

    runner = CliRunner()
    for cmd in (["submit"], ["baselines", "run"], ["study", "run"]):
        shown = runner.invoke(main, cmd + ["--help"]).output
        assert "--jobs" in shown and "--threads" in shown
    bad = runner.invoke(main, ["submit", SELECTIVE, "--name", "x", "--jobs", "0"])
    assert bad.exit_code == 2 and "--jobs" in bad.output

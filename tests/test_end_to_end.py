"""The smoke suite for real: a baseline (local workers) and a submission (through submitit's real
code path, its local executor, with one run killed mid-way, then finished by local workers, which
resume it), then the site. tests/test_slurm.py does the same through a real Slurm."""

import json
import os
import signal
import time

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.protocol.suites import load_suite
from harness.store.plan import plan_suite
from harness.store.results import ResultsStore
from harness.store.status import run_states

from conftest import ROOT


def _alive(pid: int) -> bool:
    """Whether a child process still runs; an ended one is reaped (a zombie would look alive)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except ChildProcessError:
        return False


@pytest.mark.slow
def test_smoke_suite_to_leaderboard(tmp_path):
    pytest.importorskip("submitit")
    runner = CliRunner()
    results, site = tmp_path / "results", tmp_path / "site"
    base = runner.invoke(main, ["baselines", "run", "--suite", "smoke", "--only", "batch_norm",
                                "--jobs", "2", "--threads", "1", "--results", str(results)])
    assert base.exit_code == 0, base.output
    assert {r["environment"]["torch_threads"] for r in ResultsStore(results).records()} == {1}

    # The submission goes to the "cluster", detached; its jobs are stopped (SIGTERM, as scancel
    # sends) once a run has checkpointed an epoch.
    submit = ["submit", str(ROOT / "submissions" / "selective_norm.py"), "--name", "SelectiveNorm",
              "--suite", "smoke", "--results", str(results), "--trusted"]  # ours: no sandbox needed
    cluster = ["--executor", "submitit-local", "--slurm-cpus", "1"]
    first = runner.invoke(main, submit + cluster + ["--detach"])
    assert first.exit_code == 0, first.output
    assert "SelectiveNorm: submitted 2 run(s)" in first.output
    controllers = [int(j.split("_")[0]) for j in first.output.split("(jobs ")[1].split(")")[0].split(", ")]
    deadline = time.time() + 240
    while not list((results / "checkpoints").rglob("*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    assert list((results / "checkpoints").rglob("*.pt")), "no run checkpointed in time"
    for pid in controllers:
        os.kill(pid, signal.SIGTERM)
    while any(_alive(pid) for pid in controllers) and time.time() < deadline + 60:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in controllers)

    store = ResultsStore(results)
    states = {s.seed: s for s in run_states(store, plan_suite(store, load_suite("smoke")))
              if s.entry == "SelectiveNorm"}
    assert "interrupted" in {s.state for s in states.values()}, states  # its checkpoint waits
    assert {s.state for s in states.values()} <= {"done", "interrupted", "missing"}, states
    status = runner.invoke(main, ["status", "--results", str(results), "--suite", "smoke"])
    assert status.exit_code == 0 and "interrupted" in status.output and "left to run" in status.output

    # Finished by another executor (local workers), through the same store: the killed run
    # continues from its checkpoint.
    second = runner.invoke(main, submit + ["--jobs", "2"])
    assert second.exit_code == 0, second.output
    ok = [r for r in store.records() if r.get("entry") == "SelectiveNorm" and r["status"] == "ok"]
    assert len(ok) == 2 and any(r["resumes"] for r in ok), [r["resumes"] for r in ok]
    assert {s.state for s in run_states(store, plan_suite(store, load_suite("smoke")))} == {"done"}

    built = runner.invoke(main, ["leaderboard", "build", "--results", str(results), "--out", str(site)])
    assert built.exit_code == 0, built.output
    rows = {r["entry"]: r for r in json.loads((site / "leaderboard.json").read_text())["rows"]}
    assert set(rows) == {"batch_norm", "SelectiveNorm"}
    assert rows["batch_norm"]["resnet20-digits_n"] == 2 and rows["batch_norm"]["kind"] == "baseline"
    assert rows["batch_norm"]["resnet56-digits_mean"] == "hidden"  # final, but not revealed
    assert rows["SelectiveNorm"]["resnet56-digits_mean"] == "not-run"  # not a final submission
    assert rows["batch_norm"]["resnet20-digits_mean"] > 30.0  # it learns, even in 4 short epochs
    index = (site / "index.html").read_text()
    assert "SelectiveNorm" in index and 'class="chip batch-dependent"' not in index

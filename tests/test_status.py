"""``harness status``: every state a planned run can be in, read from the store alone."""

import json
import os
import time
from dataclasses import asdict

from click.testing import CliRunner

from harness.cli import EXIT_USAGE, main
from harness.protocol.studies import load_study
from harness.protocol.suites import load_suite
from harness.store.claims import STALE_S, Claim, claim_path
from harness.store.plan import plan_study, plan_suite
from harness.store.results import ResultsStore, run_key
from harness.store.status import checkpoint_paths, run_states

from conftest import ROOT
from records import make_record

STUDY = """
name = "st"
seeds = [0, 1, 2]
[[entries]]
name = "BN"
source = "batch_norm"
[[settings]]
arch = "resnet20"
dataset = "digits"
"""


def _record_for(run, status="ok", best=80.0):
    """A fabricated record of a planned run (its setting, seed, sha256 and recipe)."""
    spec = run.spec
    record = make_record(run.entry, spec.sha256, run.setting.key, spec.seed, best, status=status)
    record["config"].update({**asdict(spec.recipe), "limit_train": spec.limit_train,
                             "limit_test": spec.limit_test})
    record["suite"]["recipe_id"] = spec.recipe_id()
    assert run_key(record) == run.key
    return record


def test_every_state_of_a_planned_run(tmp_path):
    (tmp_path / "st.toml").write_text(STUDY)
    study = load_study(tmp_path / "st.toml")
    store = ResultsStore(tmp_path / "results")
    store.runs_dir.mkdir(parents=True)
    planned = plan_study(study, store)
    assert [p.seed for p in planned] == [0, 1, 2]
    assert [s.state for s in run_states(store, planned)] == ["missing"] * 3

    store.add(_record_for(planned[0]))                      # seed 0: done
    store.add(_record_for(planned[1], status="failed"))     # seed 1: failed, then running again
    with Claim(store.root, planned[1].key, "BN seed 1"):
        states = run_states(store, planned)
        assert [s.state for s in states] == ["done", "running", "missing"]
        assert f"on {os.uname().nodename}" in states[1].detail
    assert not claim_path(store.root, planned[1].key).exists()  # released at the end
    assert run_states(store, planned)[1].state == "failed"
    assert "[exception] failed (fabricated)" in run_states(store, planned)[1].detail

    # Seed 2: a worker that died holding its claim goes stale; a checkpoint alone is interrupted.
    claim = Claim(store.root, planned[2].key, "BN seed 2").__enter__()
    old = time.time() - STALE_S - 60
    os.utime(claim.path, (old, old))
    state = run_states(store, planned)[2]
    assert state.state == "interrupted" and "no heartbeat for" in state.detail
    claim.path.unlink()
    checkpoint = checkpoint_paths(store, planned[2].spec)[0]
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"x")
    state = run_states(store, planned)[2]
    assert state.state == "interrupted" and "resumes it" in state.detail

    # A completed record wins over everything else.
    store.add(_record_for(planned[2], status="diverged", best=40.0))
    assert run_states(store, planned)[2].state == "diverged"


def test_claim_heartbeat_refreshes_the_file(tmp_path):
    with Claim(tmp_path, "k", "label") as claim:
        data = json.loads(claim.path.read_text())
        assert data["key"] == "k" and data["pid"] == os.getpid()
        os.utime(claim.path, (1, 1))
        claim._last -= 1000  # pretend the heartbeat interval has passed
        claim.beat()
        assert time.time() - claim.path.stat().st_mtime < 60


def test_suite_plan_covers_hidden_settings_of_final_entries_only(tmp_path):
    store = ResultsStore(tmp_path)
    store.register_entry("base", "baseline", "a" * 64, "smoke", True, "x")
    store.register_entry("sub", "submission", "b" * 64, "smoke", False, "y")
    store.register_entry("other", "submission", "c" * 64, "default", False, "z")
    planned = plan_suite(store, load_suite("smoke"))
    assert {(p.entry, p.setting.key) for p in planned} == {("base", "resnet20-digits"), ("base", "resnet56-digits"),
                                               ("sub", "resnet20-digits")}
    assert len(planned) == 3 * 2  # two seeds each


def test_status_command(tmp_path):
    runner = CliRunner()
    results = tmp_path / "results"
    none = runner.invoke(main, ["status", "--results", str(results)])
    assert none.exit_code == 2 and "no results folder" in none.output
    both = runner.invoke(main, ["status", "--suite", "smoke", "--study", "x.toml"])
    assert both.exit_code == EXIT_USAGE
    store = ResultsStore(results)
    store.register_entry("base", "baseline", "a" * 64, "smoke", True, "x")
    planned = plan_suite(store, load_suite("smoke"))
    store.add(_record_for(planned[0]))
    out = runner.invoke(main, ["status", "--results", str(results)])
    assert out.exit_code == 0, out.output
    assert "suite smoke: 4 run(s): 1 done, 3 missing" in out.output
    assert "left to run: 3 (3 missing, 0 failed, 0 interrupted)" in out.output
    data = json.loads(runner.invoke(main, ["status", "--results", str(results), "--json"]).output)
    assert [r["state"] for r in data[0]["runs"]].count("done") == 1
    study = runner.invoke(main, ["status", "--results", str(results), "--study",
                                 str(ROOT / "studies" / "smoke.toml")])
    assert study.exit_code == 0 and "10 run(s): 10 missing" in study.output

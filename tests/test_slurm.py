"""The slurm executor against a real Slurm: slurmctld and slurmd on localhost, started by
tests/slurm/localhost.sh (Debian's slurm-wlm). A submission's smoke suite goes through sbatch as a
job array; while the harness waits on it, one run is requeued mid-way (as on preemption) and
resumes from its checkpoint, the other is cancelled (scancel), and a detached rerun finishes the
suite, resuming that one too. Skipped, with the reason, where
Slurm is not installed or cannot start here."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.protocol.suites import load_suite
from harness.store.plan import plan_suite
from harness.store.results import ResultsStore
from harness.store.status import run_states

from conftest import ROOT

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tests" / "slurm" / "localhost.sh"


def _unavailable(reason: str):
    """Skip, except where Slurm must be there (CI sets HARNESS_REQUIRE_SLURM): then fail."""
    if os.environ.get("HARNESS_REQUIRE_SLURM"):
        pytest.fail(f"HARNESS_REQUIRE_SLURM is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    pytest.importorskip("submitit")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
               if not shutil.which(t)]
    if missing:
        _unavailable(f"no Slurm here ({', '.join(missing)} not found): apt-get install slurm-wlm")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(SCRIPT), "start", str(folder)], capture_output=True, text=True,
                             timeout=120)
    if started.returncode != 0:
        _unavailable(f"a one-node Slurm could not start here: {started.stderr.strip()[-600:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = started.stdout.strip()
    try:
        yield folder
    finally:
        subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], capture_output=True)
        subprocess.run([str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _harness(*args: str, **popen) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("harness")
    return subprocess.Popen([str(exe) if exe.exists() else "harness", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _queue(array: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={array}"],
                         capture_output=True, text=True)
    return out.stdout.split()


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_smoke_suite_through_sbatch_with_runs_requeued_and_cancelled(slurm, tmp_path):
    results = tmp_path / "results"
    submit = ["submit", str(ROOT / "submissions" / "selective_norm.py"), "--name", "SelectiveNorm",
              "--suite", "smoke", "--results", str(results), "--trusted",
              "--executor", "slurm", "--slurm-partition", "debug", "--slurm-cpus", "1",
              "--slurm-gpus", "0", "--slurm-mem", "2", "--slurm-time", "30"]

    # Attached: the harness waits on the array. Once both runs checkpointed, one is requeued (as
    # Slurm does to a preempted job) and the other cancelled.
    attached = _harness(*submit)
    _wait(lambda: len(list((results / "running").glob("*.json"))) == 2, 300, "two claims")
    arrays = {p.name.split("_")[0] for p in (results / "slurm").rglob("*_submitted.pkl")}
    assert len(arrays) == 1, arrays  # one job array for the sweep
    array = arrays.pop()
    status = _harness("status", "--results", str(results), "--suite", "smoke")
    assert status.wait(60) == 0
    shown = status.stdout.read()
    assert shown.count("running") >= 2 and f"Slurm job {array}_1" in shown, shown
    _wait(lambda: len(list((results / "checkpoints").rglob("*.pt"))) == 2, 300, "two checkpoints")
    subprocess.run(["scontrol", "requeue", f"{array}_0"], check=True)
    # Slurm holds a requeued job back for two minutes (its begin time); let it start again now.
    _wait(lambda: subprocess.run(["squeue", "--noheader", "--format=%r", f"--jobs={array}_0"],
                                 capture_output=True, text=True).stdout.strip() == "BeginTime",
          60, "the requeued job to wait for its begin time")
    subprocess.run(["scontrol", "update", f"JobId={array}_0", "StartTime=now"], check=True)
    subprocess.run(["scancel", f"{array}_1"], check=True)
    output = attached.communicate(timeout=400)[0]  # it must not wait forever on the cancelled job
    assert attached.returncode != 0, output
    store = ResultsStore(results)
    [requeued] = [r for r in store.records() if r["status"] == "ok"]
    assert requeued["resumes"] and requeued["environment"]["slurm"]["restart_count"] == "1"
    crashed = [r for r in store.records() if r["status"] == "failed"]
    assert len(crashed) == 1 and crashed[0]["failure"]["category"] == "crashed", output
    assert f"cluster job {array}_1 ended without a record" in crashed[0]["failure"]["message"]

    # Detached: the same command resubmits only what is not done and returns at once.
    detached = _harness(*submit, "--detach")
    output = detached.communicate(timeout=120)[0]
    assert detached.returncode == 0, output
    assert "submitted 1 run(s)" in output, output
    new_array = re.search(r"\(jobs? (\d+)", output).group(1)
    _wait(lambda: not _queue(new_array), 300, "the array to finish")
    planned = plan_suite(store, load_suite("smoke"))
    assert {s.state for s in run_states(store, planned)} == {"done"}

    ok = [r for r in store.records() if r["status"] == "ok"]
    assert len(ok) == 2 and all(r["resumes"] for r in ok), [r["resumes"] for r in ok]
    for record in ok:  # each record names its job (a one-run rerun is a plain job, not an array)
        job = record["environment"]["slurm"]
        assert job["partition"] == "debug" and job["node"] == record["environment"]["hostname"]
        assert job.get("array_job_id", job["job_id"]) in {array, new_array}, job
    logs = list((results / "slurm").rglob("*_log.out"))
    assert len(logs) == 3, logs  # one log per array element: two in the first array, one in the rerun

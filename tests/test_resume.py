"""Checkpoints: a run killed with SIGKILL mid-epoch resumes and ends with the uninterrupted record."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.engine.checkpoint import Checkpoint
from harness.engine.runner import run_eval
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec, SpeedOptions
from harness.reporting import Reporter
from harness.store.record import read_record, strip_timings

from conftest import ROOT

HARNESS = str(Path(sys.executable).parent / "harness")
SELECTIVE = str(ROOT / "submissions" / "selective_norm.py")


def command(out, *more):
    # SelectiveNorm draws its masks from torch's global generator: resuming must restore it too.
    return [HARNESS, "eval", SELECTIVE, "--arch", "resnet20", "--dataset", "digits", "--epochs", "4",
            "--batch-size", "32", "--limit-train", "480", "--limit-test", "120", "--device", "cpu",
            "--results", str(out), *more]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def only_record(out):
    (path,) = list((out / "runs").glob("*.json"))
    return read_record(path)


def same_run(record):
    out = strip_timings(record)
    out["environment"].pop("argv")
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_record(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(command(whole), env=env(), check=True, capture_output=True)
    expected = only_record(whole)
    assert expected["resumes"] == [] and not list((whole / "checkpoints").glob("*"))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((killed / "checkpoints").glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "runs").exists() or not list((killed / "runs").glob("*.json"))
    (ckpt,) = list((killed / "checkpoints").glob("*.pt"))

    resumed = subprocess.run(command(killed), env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint of epoch" in resumed.stderr
    record = only_record(killed)
    assert len(record["resumes"]) == 1 and 1 <= record["resumes"][0]["from_epoch"] < 4
    # It went on from the checkpoint: only the remaining epochs were trained.
    trained = [ln.split()[1] for ln in resumed.stdout.splitlines() if ln.startswith("epoch ")]
    assert trained == [f"{k}/4" for k in range(record["resumes"][0]["from_epoch"] + 1, 5)]
    assert not ckpt.exists()
    assert same_run(record) == same_run(expected)


class Epochs(Reporter):
    """Calls ``fn`` with each epoch's metrics."""

    def __init__(self, fn):
        self.fn = fn

    def epoch(self, metrics):
        self.fn(metrics)


def small(out_seed=0, **kw):
    return RunSpec(SELECTIVE, "resnet20", "digits", seed=out_seed,
                     recipe=Recipe(epochs=2, batch_size=32),
                     limit_train=96, limit_test=40, device="cpu", **kw)


def test_checkpoint_is_kept_per_epoch_and_removed_with_the_record(tmp_path):
    seen = []

    def on_epoch(e):
        seen.append(sorted(p.name for p in (tmp_path / "checkpoints").glob("*")))

    record, _ = run_eval(small(), tmp_path, reporter=Epochs(on_epoch))
    # on_epoch runs before the epoch's checkpoint: none before epoch 1, one (no temp files) after.
    assert seen[0] == [] and len(seen[1]) == 1 and seen[1][0].endswith(".pt")
    assert not list((tmp_path / "checkpoints").glob("*"))  # removed once the record exists
    assert record["resumes"] == []


def test_another_runs_checkpoint_is_never_used(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.pt", "identity-a")
    ckpt.save({"epochs": []})
    assert Checkpoint(tmp_path / "c.pt", "identity-b").load() is None
    assert Checkpoint(tmp_path / "c.pt", "identity-a").load()["epochs"] == []
    config = small().with_(sha256="sha", protocol="p1")
    base = config.digest()
    assert base == config.with_(speed=SpeedOptions(channels_last=True), device="cpu",
                                resume=False).digest()
    assert base == config.with_(dataset="DIGITS").digest()  # the same dataset, by another name
    assert base != small(out_seed=1).with_(sha256="sha", protocol="p1").digest()
    assert base != config.with_(sha256="other").digest()
    assert base != config.with_(protocol="p2").digest()
    assert base != config.with_(recipe=Recipe(epochs=3, batch_size=32)).digest()
    assert base != config.with_(limit_train=100).digest()
    assert base != config.with_(planned=True).digest()  # an ad hoc run never stands in for a suite's


@pytest.mark.slow
def test_no_resume_starts_over(tmp_path):
    # Leave a checkpoint as an interrupted run does: Ctrl-C after epoch 1.
    def stop_after_first(e):
        if e.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(small(), tmp_path, reporter=Epochs(stop_after_first))
    assert list((tmp_path / "checkpoints").glob("*.pt"))
    fresh, _ = run_eval(small(resume=False), tmp_path)
    assert fresh["resumes"] == [] and fresh["epochs_completed"] == 2
    assert not list((tmp_path / "checkpoints").glob("*.pt"))

"""Training: it learns, it is deterministic on CPU, it records failures, it follows the recipe."""

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli import EXIT_DIVERGED, main
from harness.engine.runner import run_eval
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.reporting import Reporter
from harness.store.record import SCHEMA_VERSION, read_record, strip_timings, write_json_atomic

from conftest import FIXTURES, ROOT

TEMPLATE = str(ROOT / "custom_norm.py")


def small(seed=42, epochs=2, submission=TEMPLATE, **kw):
    return RunSpec(submission=submission, arch="resnet20", dataset="digits", seed=seed,
                     recipe=Recipe(epochs=epochs), limit_train=260, limit_test=120, **kw)


@pytest.mark.slow
def test_digits_learns_well_above_chance(tmp_path):
    config = RunSpec(submission=TEMPLATE, arch="resnet20", dataset="digits", seed=0,
                       recipe=Recipe(epochs=6))  # 95.8% on this CPU; 80% leaves room for others
    record, _ = run_eval(config, tmp_path)
    assert record["status"] == "ok"
    assert record["best_acc"] >= 80.0  # chance is 10%
    accs = [e["test_acc"] for e in record["epochs"]]
    assert record["best_acc"] == max(accs) and record["final_acc"] == accs[-1]
    assert record["epochs"][-1]["train_loss"] < record["epochs"][0]["train_loss"] / 3


@pytest.mark.slow
def test_same_seed_same_record_apart_from_timings(tmp_path):
    a, pa = run_eval(small(seed=5), tmp_path / "a")
    b, pb = run_eval(small(seed=5), tmp_path / "b")
    assert pa != pb
    assert strip_timings(a) == strip_timings(b)
    assert a["epochs"][-1]["train_loss"] == b["epochs"][-1]["train_loss"]  # bit-identical
    c, _ = run_eval(small(seed=6), tmp_path / "c")
    assert c["epochs"][0]["train_loss"] != a["epochs"][0]["train_loss"]


@pytest.mark.slow
def test_record_schema(tmp_path):
    record, path = run_eval(small(epochs=3), tmp_path)
    assert read_record(path) == json.loads(Path(path).read_text())
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok"
    assert record["comparable"] is False and any("limit_train" in d for d in record["deviations"])
    cfg = record["config"]
    assert (cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["nesterov"]) == (0.1, 0.9, 5e-4, False)
    assert cfg["batch_size"] == 128 and cfg["test_batch_size"] == 128
    assert len(record["submission"]["sha256"]) == 64
    env = record["environment"]
    for key in ("device", "device_name", "torch", "torchvision", "python", "harness"):
        assert env[key]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert all(math.isfinite(e[key]) for e in record["epochs"])
    assert record["best_epoch"] in (1, 2, 3) and record["wall_s"] > 0
    assert record["train_images_per_s"] > 0 and record["peak_memory"]["peak_memory_bytes"] > 0
    assert record["started_at"] <= record["ended_at"]
    # Cosine over T_max = epochs, stepped once per epoch after evaluation.
    lrs = [e["lr"] for e in record["epochs"]]
    expected = [0.05 * (1 + math.cos(math.pi * k / 3)) for k in range(3)]
    assert lrs == pytest.approx(expected)


@pytest.mark.slow
def test_one_host_read_per_epoch(monkeypatch, tmp_path):
    """Loss, accuracy and the divergence check stay on the device during the epoch: no
    .item()/.tolist() per step (as on a GPU, where the check is read only every 16 steps)."""
    from harness.engine.train import DivergenceWatch

    monkeypatch.setattr(DivergenceWatch, "CPU_EVERY", 10**6)
    calls = {"n": 0}
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    from harness.data.tensors import load_dataset
    from harness.engine.train import train
    from harness.models import build_model

    data = load_dataset("digits")
    data.train = data.train.head(640)  # 5 steps per epoch
    data.test = data.test.head(256)
    model = build_model("resnet20", 10, torch.nn.BatchNorm2d)
    calls["n"] = 0
    result = train(model, data, Recipe(epochs=2), torch.device("cpu"), seed=0)
    assert len(result.epochs) == 2
    assert calls["n"] == 2


@pytest.mark.slow
def test_divergence_stops_the_run_at_once_and_keeps_the_best(tmp_path):
    # 260 images in batches of 128: 3 steps an epoch. The layer turns NaN at the 5th step.
    config = small(epochs=5, submission=str(FIXTURES / "nan_after_steps.py"))
    seen = []

    class Steps(Reporter):
        def step(self):
            seen.append(1)

    record, path = run_eval(config, tmp_path, reporter=Steps())
    assert record["status"] == "diverged" and record["flags"][0] == "diverged"
    assert record["failure"]["category"] == "diverged"
    assert (record["failure"]["epoch"], record["failure"]["step"]) == (2, 2)
    assert len(seen) == 5  # stopped at the bad step, not at the end of the epoch
    assert "not finite after step 2 of epoch 2" in record["failure"]["message"]
    # Only epoch 1 completed; its accuracy is the run's best, and it is finite.
    assert record["epochs_completed"] == 1 and record["best_epoch"] == 1
    assert record["best_acc"] == json.loads(Path(path).read_text())["epochs"][0]["test_acc"]
    result = CliRunner().invoke(main, ["eval", str(FIXTURES / "nan_after_steps.py"), "--arch", "resnet20",
                                       "--dataset", "digits", "--epochs", "5", "--limit-train", "260",
                                       "--limit-test", "120", "--results", str(tmp_path)])
    assert result.exit_code == EXIT_DIVERGED and "diverged" in result.stderr


def test_a_non_finite_parameter_is_divergence_too():
    from harness.engine.train import DivergenceWatch

    model = torch.nn.Linear(3, 2)
    watch = DivergenceWatch(model, torch.device("cpu"))
    assert watch.step(torch.tensor(1.0), 1, 1) is None
    with torch.no_grad():
        model.bias[1] = float("inf")
    bad = watch.step(torch.tensor(0.5), 1, 2)  # the loss is still finite
    assert bad["what"] == "parameter bias" and (bad["epoch"], bad["step"]) == (1, 2)


def test_deferred_reads_still_name_the_first_bad_step():
    # On a GPU the check is read every CUDA_EVERY steps; emulate that on CPU.
    from harness.engine.train import DivergenceWatch

    watch = DivergenceWatch(torch.nn.Linear(3, 2), torch.device("cpu"))
    watch.every = 4
    losses = [1.0, float("nan"), 1.0]
    assert [watch.step(torch.tensor(v), 3, i + 1) for i, v in enumerate(losses)] == [None] * 3
    bad = watch.step(torch.tensor(1.0), 3, 4)
    assert (bad["epoch"], bad["step"]) == (3, 2)


@pytest.mark.parametrize("acc,classes,n,flag", [(10.5, 10, 10_000, True), (11.0, 10, 10_000, False),
                                                (14.0, 10, 360, True), (1.2, 100, 10_000, True),
                                                (5.0, 10, 10_000, True), (None, 10, 100, False)])
def test_chance_accuracy(acc, classes, n, flag):
    from harness.store.derived import at_chance

    assert at_chance(acc, 100.0 / classes, n) is flag


def test_a_run_that_learns_nothing_is_flagged_at_chance(tmp_path):
    record, _ = run_eval(small(epochs=1, submission=str(FIXTURES / "zero_output.py")), tmp_path)
    assert record["status"] == "ok" and record["flags"] == ["chance"]
    assert record["chance_acc"] == 10.0


def test_exception_during_training_is_recorded(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(FIXTURES / "raises_in_forward.py"), "--arch",
                                       "resnet20", "--dataset", "digits", "--epochs", "4",
                                       "--limit-train", "260", "--limit-test", "60",
                                       "--results", str(tmp_path)])
    assert result.exit_code == 1
    assert "run failed: ValueError: statistics buffer exhausted" in result.stderr
    assert "Traceback" not in result.output
    (path,) = (tmp_path / "runs").glob("*.json")
    record = read_record(path)
    assert record["status"] == "failed" and record["failure"]["category"] == "exception"
    assert "raises_in_forward.py" in record["failure"]["traceback"]
    assert record["epochs_completed"] >= 1  # the epochs before the failure are kept


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.slow
def test_bf16_is_recorded_not_comparable_and_still_trains(tmp_path):
    fp32, _ = run_eval(small(seed=3, epochs=1), tmp_path / "a")
    config = small(seed=3, epochs=1)
    config = config.with_(precision="bf16")
    bf16, _ = run_eval(config, tmp_path / "b")
    assert bf16["status"] == "ok" and bf16["config"]["precision"] == "bf16"
    assert fp32["config"]["precision"] == "fp32" and fp32["config"]["compile"] == "eager"
    assert "precision=bf16 (protocol: fp32)" in bf16["deviations"]
    assert all(math.isfinite(e["train_loss"]) for e in bf16["epochs"])
    assert bf16["epochs"][0]["train_loss"] != fp32["epochs"][0]["train_loss"]  # autocast took effect


def test_a_run_that_diverges_before_its_first_evaluation_scores_what_the_reference_reports():
    """The reference keeps evaluating a diverged model: NaN logits predict class 0 everywhere, the
    share of class 0 in its balanced test sets, 100 / classes. The run keeps its diverged flag."""
    from harness.store.derived import finish_record

    record = {"status": "diverged", "config": {"num_classes": 100, "precision": "fp32"},
              "data": {"test_size": 10_000},
              "failure": {"category": "diverged", "epoch": 1, "step": 3, "message": "loss is nan"}}
    finish_record(record, [])
    assert record["best_acc"] == record["final_acc"] == 1.0 and record["best_epoch"] is None
    assert record["flags"] == ["diverged", "chance"]
    assert record["failure"]["scored_as"].startswith("chance")
    assert torch.full((2, 100), float("nan")).argmax(1).tolist() == [0, 0]  # torch's NaN argmax
    ok = {"status": "ok", "config": {"num_classes": 10, "precision": "fp32"},
          "data": {"test_size": 100}, "failure": None}
    finish_record(ok, [])  # a run with no epochs that did not diverge has no score
    assert ok["best_acc"] is None

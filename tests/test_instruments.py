"""The run's instruments (layer probes, evaluation timing, norm-layer counts) and the study-only
recipe fields (Adam, constant schedule, early stopping, no augmentation)."""

import json
import math

import pytest
import torch
from torch import nn

from harness.engine.instruments import BatchTimer, layer_probe, norm_summary, probe_epochs
from harness.engine.runner import run_eval
from harness.engine.train import should_stop
from harness.errors import SuiteError
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.protocol.suites import parse_recipe
from harness.store.record import SCHEMA_VERSION, read_record, strip_timings, write_json_atomic

from conftest import ROOT
from records import make_record

SELECTIVE = str(ROOT / "submissions" / "selective_norm.py")


class CountingNorm(nn.BatchNorm2d):
    """BatchNorm that also counts its training-mode calls in a plain Python attribute."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        return super().forward(x)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = CountingNorm(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.norm(self.conv(x)))).mean((2, 3)))


def test_probe_epochs_are_first_middle_last():
    assert probe_epochs(200) == (1, 100, 200)
    assert probe_epochs(4) == (1, 2, 4)
    assert probe_epochs(5) == (1, 3, 5)
    assert probe_epochs(2) == (1, 2)
    assert probe_epochs(1) == (1,)


def test_layer_probe_matches_autograd_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(8, 3, 5, 5) * 3 + 2, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    probe = layer_probe(model, x, y, CountingNorm, torch.device("cpu"))

    # Nothing of the model changed: parameters, running statistics, its Python-side counter, the
    # random stream (the probe's dropout drew from it), and no .grad was left behind.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.norm.calls == 0 and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)

    # The same step by hand, on a copy, with the same random stream.
    import copy

    ref = copy.deepcopy(model).train()
    torch.set_rng_state(rng)
    out = ref.norm(ref.conv(x))
    loss = nn.functional.cross_entropy(ref.fc(ref.drop(torch.relu(out)).mean((2, 3))), y)
    loss.backward()
    torch.set_rng_state(rng)
    expected = {name: math.sqrt(sum(float((p.grad.double() ** 2).sum())
                                    for p in m.parameters(recurse=False)))
                for name, m in (("conv", ref.conv), ("norm", ref.norm), ("fc", ref.fc))}
    assert list(probe["grad_norms"]) == ["conv", "norm", "fc"]  # the model's order
    for name, value in expected.items():
        assert probe["grad_norms"][name] == pytest.approx(value, rel=1e-6)
    assert probe["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    # BatchNorm's output in training mode (weight 1, bias 0) is standardised per channel: over all
    # its elements, mean 0 and std sqrt(var / (var + eps)), i.e. 1 for these inputs.
    stats = probe["activations"]["norm"]
    assert stats["mean"] == pytest.approx(float(out.detach().mean()), abs=1e-6)
    assert stats["mean"] == pytest.approx(0.0, abs=1e-6)
    assert stats["std"] == pytest.approx(float(out.detach().std(unbiased=False)), rel=1e-6)
    assert stats["std"] == pytest.approx(1.0, abs=1e-3)
    assert probe["batch_images"] == 8


def test_layer_probe_reports_an_error_instead_of_raising():
    class Broken(CountingNorm):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Tiny()
    model.norm = Broken(4)
    probe = layer_probe(model, torch.randn(2, 3, 5, 5), torch.tensor([0, 1]), Broken,
                        torch.device("cpu"))
    assert probe == {"error": "RuntimeError: boom"}


def test_norm_summary_counts_instances_and_shared_parameters_once():
    model = nn.Sequential(CountingNorm(4), nn.Conv2d(4, 4, 1), CountingNorm(6))
    model.append(model[0])  # the same layer twice
    summary = norm_summary(model, CountingNorm)
    assert summary == {"class": "CountingNorm", "count": 2, "parameters": 2 * 4 + 2 * 6}


def test_batch_timer_median_of_full_batches_and_throughput():
    timer = BatchTimer(torch.device("cpu"))
    timer.marks = [[0.0, 1.0], [1.0, 3.0], [3.0, 3.5]]
    timer.sizes = [128, 128, 16]
    s = timer.summary(torch.device("cpu"))
    assert s["median_ms"] == pytest.approx(1500.0)  # the partial batch is not a batch of 128
    assert s["throughput_images_per_s"] == pytest.approx(272 / 3.5)
    assert s["batch_size"] == 128 and s["batches"] == 3
    assert BatchTimer(torch.device("cpu")).summary(torch.device("cpu")) is None


@pytest.mark.parametrize("accs, patience, stop", [
    ([50, 60, 59, 58, 57], 3, True),   # three epochs without beating 60
    ([50, 60, 59, 58], 3, False),      # 60 is within the last three: it beat 50
    ([60, 60, 60, 60], 3, True),       # equal is not better
    ([10, 20, 30, 40], 1, False),
    ([10, 20, 30, 30], 1, True),
    ([10, 20, 30, 30], None, False),
])
def test_early_stopping_rule(accs, patience, stop):
    from harness.engine.train import EpochMetrics

    epochs = [EpochMetrics(i, 0.1, 1.0, 50.0, 1.0, a, 0.0, 0.0) for i, a in enumerate(accs, 1)]
    assert should_stop(epochs, patience) is stop


def _config(**recipe):
    return RunSpec(SELECTIVE, "resnet20", "digits", seed=3,
                     recipe=Recipe(**{"epochs": 3, "batch_size": 32, **recipe}),
                     limit_train=96, limit_test=64)


@pytest.mark.slow
def test_instruments_do_not_change_the_run(tmp_path):
    # SelectiveNorm draws dropout masks: a probe that consumed the random stream, or changed the
    # running statistics, would change every later epoch.
    on, _ = run_eval(_config(), tmp_path / "on", checkpoints=False)
    off_config = _config()
    off_config = off_config.with_(instruments=False)
    off, _ = run_eval(off_config, tmp_path / "off", checkpoints=False)
    assert on["epochs"] and strip_timings(on["epochs"]) == strip_timings(off["epochs"])
    assert [p["epoch"] for p in on["probes"]] == [1, 2, 3] and off["probes"] == []
    assert off["instruments"]["enabled"] is False and off["inference"] is None
    probe = on["probes"][0]
    assert len(probe["activations"]) == on["norm_layers"]["count"] == 21  # 19 + 2 in the shortcuts
    assert all(v is not None and v > 0 for v in probe["grad_norms"].values())
    assert on["norm_layers"]["parameters"] == 2 * 7 * (16 + 32 + 64)  # weight and bias
    assert on["inference"]["batch_size"] == 64 and on["inference"]["median_ms"] > 0
    assert 0 < on["instruments"]["probe_fraction"] < 1
    assert on["dynamics"]["epochs_to_reach"]["99%"] == on["best_epoch"] or \
        on["epochs"][on["dynamics"]["epochs_to_reach"]["99%"] - 1]["test_acc"] >= 0.99 * on["best_acc"]
    assert on["schema_version"] == SCHEMA_VERSION == 3


def test_adam_constant_schedule_and_early_stopping(tmp_path):
    # lr 0: nothing learns, the test accuracy never improves, so patience 1 stops after epoch 2.
    record, _ = run_eval(_config(epochs=6, optimizer="adam", schedule="constant", lr=0.0,
                                 early_stopping_patience=1), tmp_path, checkpoints=False)
    assert record["status"] == "ok" and record["stopped_early"] == 2
    assert record["epochs_completed"] == 2 and [e["lr"] for e in record["epochs"]] == [0.0, 0.0]
    assert record["probes"][-1]["epoch"] == 2  # the last epoch is probed even when cut short
    assert record["config"]["optimizer"] == "adam"
    assert any(d.startswith("optimizer='adam'") for d in record["deviations"])
    assert not record["comparable"]


def test_optimizer_and_schedule_follow_the_recipe():
    from harness.engine.train import make_optimizer, make_scheduler

    model = nn.Linear(2, 2)
    adam = make_optimizer(model, Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0))
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["lr"] == 1e-3 and adam.defaults["betas"] == (0.9, 0.999)
    assert adam.defaults["weight_decay"] == 0.0
    sgd = make_optimizer(model, Recipe())
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 5e-4 and sgd.defaults["nesterov"] is False
    constant = make_scheduler(adam, Recipe(schedule="constant", epochs=3))
    cosine = make_scheduler(sgd, Recipe(epochs=3))
    lrs = []
    for _ in range(3):
        lrs.append((adam.param_groups[0]["lr"], sgd.param_groups[0]["lr"]))
        adam.step()  # no gradients: changes nothing, but keeps torch's step-order check quiet
        sgd.step()
        constant.step()
        cosine.step()
    assert [a for a, _ in lrs] == [1e-3] * 3
    assert [b for _, b in lrs] == pytest.approx([0.1, 0.075, 0.025])


def test_no_augmentation_trains_on_the_plain_images(monkeypatch, tmp_path):
    from harness.data.tensors import BatchPipeline
    from harness.vetting import tamper

    calls = []
    original = BatchPipeline.crop_flip
    monkeypatch.setattr(BatchPipeline, "crop_flip", lambda self, *a: calls.append(1) or original(self, *a))
    tamper.baseline.cache_clear()  # the spy is the test's, not a layer's: part of the baseline
    try:
        run_eval(_config(epochs=1, augment=False), tmp_path / "a", checkpoints=False)
        assert calls == []
        run_eval(_config(epochs=1), tmp_path / "b", checkpoints=False)
        assert len(calls) == 3  # 96 images in batches of 32
    finally:
        monkeypatch.undo()
        tamper.baseline.cache_clear()


def test_recipe_validation_and_suites_refuse_study_only_fields():
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule"):
        Recipe(schedule="step")
    with pytest.raises(ValueError, match="early_stopping_patience"):
        Recipe(early_stopping_patience=0)
    with pytest.raises(SuiteError, match="study"):
        parse_recipe({"optimizer": "adam"}, "x.toml")
    with pytest.raises(SuiteError, match="augment"):
        parse_recipe({"augment": False}, "x.toml")
    assert parse_recipe({"optimizer": "adam", "epochs": 12}, "x.toml", study=True).optimizer == "adam"
    assert parse_recipe({"epochs": 4}, "x.toml").epochs == 4
    # The protocol recipe's identity (and so every older run key) has no new field in it.
    assert set(Recipe().identity()) == {"epochs", "batch_size", "test_batch_size", "lr", "momentum",
                                        "weight_decay", "nesterov", "schedule"}
    assert Recipe(optimizer="adam").identity()["optimizer"] == "adam"


def test_version_1_records_are_read_and_upgraded(tmp_path):
    record = make_record("A", "a" * 64, "resnet20-digits", 0, 80.0, version=1)
    assert "dynamics" not in record
    path = write_json_atomic(tmp_path / "r.json", record)
    read = read_record(path)
    assert read["schema_version"] == 3 and read["upgraded_from"] == 1
    assert read["evaluation"] is None  # no batch check was run then
    assert read["dynamics"]["epochs_to_reach"] == {"90%": 1, "95%": 1, "99%": 3}  # 78, 79, 80
    assert read["probes"] == [] and read["inference"] is None
    assert json.loads(path.read_text())["schema_version"] == 1  # the file is left as it was
    record["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99"):
        read_record(write_json_atomic(tmp_path / "s.json", record))

"""The tracks beyond CNNs, end to end: data of their kind, models built for it, trained and scored."""

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.data.offline import stratified_split
from harness.data.tensors import load_dataset
from harness.engine.runner import run_eval
from harness.errors import RunError
from harness.protocol.catalog import ARCHITECTURES, DATASETS, compatibility_error
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.protocol.suites import Setting, load_suite

from conftest import needs_sandbox


def test_breast_cancer_is_scikit_learns_standardised_on_its_train_split():
    theirs = pytest.importorskip("sklearn.datasets").load_breast_cancer()
    ours = load_dataset("breast_cancer")
    train, test = stratified_split(theirs.target, 0.2, 0)
    assert torch.equal(ours.test.labels, torch.as_tensor(theirs.target[test]))
    mean, std = theirs.data[train].mean(0), theirs.data[train].std(0)
    expected = torch.as_tensor((theirs.data[test] - mean) / std, dtype=torch.float32)
    assert torch.allclose(ours.test.inputs, expected, atol=1e-5)
    assert ours.train.inputs.shape == (455, 30) and ours.spec.inputs().shape == (30,)
    assert np.allclose(ours.train.inputs.mean(0).numpy(), 0, atol=1e-5)


def test_an_architecture_refuses_a_dataset_of_another_kind():
    assert compatibility_error("resnet20", "cifar10") is None
    assert compatibility_error("mlp3x100", "breast_cancer") is None
    message = compatibility_error("resnet20", "breast_cancer")
    assert "takes image inputs; breast_cancer holds features: use mlp3x100" in message
    with pytest.raises(RunError, match="holds image"):
        run_eval(RunSpec("batch_norm", "mlp3x100", "digits", seed=0, recipe=Recipe(epochs=1)), None)
    refused = CliRunner().invoke(main, ["eval", "batch_norm", "--arch", "resnet20", "--dataset",
                                        "breast_cancer", "--epochs", "1"])
    assert refused.exit_code == 2 and "holds features" in refused.output


def test_the_reference_flags_offer_the_references_choices_only():
    from harness.cli.reference import parser

    choices = {a.dest: a.choices for a in parser()._actions if a.choices}
    assert "mlp3x100" not in choices["arch"] and "breast_cancer" not in choices["dataset"]
    assert {"resnet20", "resnet56", "vgg16bn"} <= set(choices["arch"])


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["batch_norm", "layer_norm_per_position", "dyt"])
def test_an_mlp_learns_breast_cancer_with_each_layer(tmp_path, layer):
    spec = RunSpec(layer, "mlp3x100", "breast_cancer", seed=0, recipe=Recipe(epochs=3, batch_size=32),
                   device="cpu")
    record, _ = run_eval(spec, tmp_path)
    assert record["status"] == "ok" and record["best_acc"] > 90.0  # chance: 62.7% (the majority class)


@needs_sandbox
@pytest.mark.slow
def test_an_untrusted_mlp_run_is_trained_and_scored_apart(tmp_path):
    from harness.execution.options import Execution, Isolation
    from harness.execution.sweep import SweepEntry, sweep
    from harness.store.results import ResultsStore

    smoke = load_suite("smoke")
    suite = dataclasses.replace(smoke, settings=(Setting("mlp3x100", "breast_cancer", False),),
                                seeds=(1,), recipe=Recipe(epochs=2, batch_size=32))
    result = sweep(ResultsStore(tmp_path), SweepEntry("batch_norm", "bn-mlp", "submission", suite),
                   Execution(device="cpu", isolation=Isolation(untrusted=True)))
    (record,) = result.ran
    assert record["status"] == "ok" and record["isolation"]["sandboxed"], record.get("failure")
    assert record["best_acc"] > 80.0


def test_the_tracks_architectures_are_listed_with_their_track():
    assert {ARCHITECTURES[a].track for a in ("mlp3x100", "mlp3x512")} == {"mlp"}
    assert DATASETS["breast_cancer"].kind == "features"
    listed = CliRunner().invoke(main, ["list"])
    assert "mlp3x100" in listed.output and "breast_cancer" in listed.output


def test_digits_rows_are_the_digits_read_row_by_row():
    rows, images = load_dataset("digits_rows"), load_dataset("digits")
    assert tuple(rows.train.inputs.shape) == (1437, 8, 8) and rows.spec.inputs().shape == (8, 8)
    assert torch.equal(rows.train.labels, images.train.labels)  # the same split
    x = rows.train.inputs.double()
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(unbiased=False)) - 1) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, floor", [
    ("lstm2", "layer_norm_per_position", 85.0), ("gru2", "batch_norm", 85.0),
    ("transformer4", "layer_norm_per_position", 85.0), ("transformer4", "dyt", 50.0)])
def test_sequence_models_learn_digits_rows_under_their_tracks_recipe(tmp_path, arch, layer, floor):
    """Chance is 10%. A few epochs at batch 32 of the track's recipe (AdamW, warm-up + cosine)."""
    from harness.protocol.catalog import track_of
    from harness.protocol.recipe import TRACK_RECIPES

    recipe = dataclasses.replace(TRACK_RECIPES[track_of(arch)], epochs=8, batch_size=32,
                                 warmup_epochs=1)
    record, _ = run_eval(RunSpec(layer, arch, "digits_rows", seed=0, recipe=recipe, device="cpu"),
                         tmp_path)
    assert record["status"] == "ok" and record["best_acc"] > floor, record["best_acc"]


def test_a_sequence_model_skips_the_channels_last_probe(tmp_path):
    from harness.protocol.spec import SpeedOptions

    spec = RunSpec("batch_norm", "lstm2", "digits_rows", seed=0, recipe=Recipe(epochs=1, batch_size=64),
                   device="cpu", limit_train=128, limit_test=64,
                   speed=SpeedOptions(channels_last=True))
    record, _ = run_eval(spec, tmp_path)
    speed = record["config"]["speed"]
    assert record["status"] == "ok" and not speed["channels_last"] and speed["checks"] == []
    assert any("3-D" in n for n in speed["notes"])


def test_a_dataset_spec_survives_the_json_round_trip_to_a_worker():
    import json

    spec = DATASETS["imdb"]
    back = type(spec).from_json(json.loads(json.dumps(dataclasses.asdict(spec))))
    assert back == spec and back.inputs() == spec.inputs()

"""harness bench: structure and sanity of its measurements (figures come from bench/results/)."""

import json

import pytest
import torch
from click.testing import CliRunner

from harness.bench.throughput import Bench, dataset_or_random, norm_costs, reference_loader, run
from harness.cli import main
from harness.vetting.submission import load


def test_absent_dataset_is_replaced_by_random_data_of_its_shape(tmp_path):
    data, source = dataset_or_random("cifar100", str(tmp_path))
    assert source == "random" and len(data.train) == 50_000 and len(data.test) == 10_000
    assert data.train.inputs.shape[1:] == (3, 32, 32) and int(data.train.labels.max()) < 100
    grey, _ = dataset_or_random("fmnist", str(tmp_path))
    assert grey.train.inputs.shape[1:] == (1, 32, 32) and len(grey.train) == 60_000


def test_reference_loader_yields_normalised_3_channel_batches():
    data, _ = dataset_or_random("digits", None)
    x, y = next(iter(reference_loader(data, torch.device("cpu"), workers=0)))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (128,)
    assert abs(x.mean().item()) < 0.5  # normalised with the dataset's own mean/std



def bench(arch: str, dataset: str) -> Bench:
    """One quiet round on the CPU."""
    return Bench(arch, dataset, torch.device("cpu"), rounds=1, progress=lambda m: None)


@pytest.mark.slow
def test_pipeline_comparison_reports_all_three_and_ratios():
    out = run(bench("resnet20", "digits"), [], steps=2, compiled=False, workers=0)
    for key in ("harness_median", "reference_median", "bound_median", "eval_images_per_s"):
        assert out[key] > 0
    assert out["ratio_harness_over_bound"] == pytest.approx(out["harness_median"] / out["bound_median"])
    assert out["projected_200_epoch_s"] > 0 and out["machine"]["description"]


@pytest.mark.slow
def test_norm_costs_are_relative_to_batchnorm():
    norms = {"batch_norm": torch.nn.BatchNorm2d, "group_norm": load("group_norm").norm_class}
    costs = norm_costs(bench("resnet20", "digits"), norms, steps=1, compiled=False)
    assert costs["batch_norm"]["eager_ratio"] == 1.0
    assert costs["group_norm"]["eager_ratio"] > 0 and costs["group_norm"]["eager_step_ms"] > 0


@pytest.mark.slow
def test_cli_writes_json(tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(main, ["bench", "--dataset", "digits", "--steps", "2", "--rounds", "1",
                                       "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "harness/reference" in result.output
    assert json.loads(out.read_text())["dataset"] == "digits"
    bad = CliRunner().invoke(main, ["bench", "--norm", "no_such_norm", "--steps", "1"])
    assert bad.exit_code == 1 and "not a baseline name" in bad.stderr


@pytest.mark.slow
def test_packing_benchmark_runs_both_ways_and_reports_the_ratio():
    from harness.bench.overheads import packing

    out = packing("resnet20", "digits", "cpu", jobs=2, runs=2, limit_train=128, progress=lambda m: None)
    assert out["jobs_1_s"] > 0 and out["jobs_2_s"] > 0
    assert out["ratio"] == pytest.approx(out["jobs_1_s"] / out["jobs_2_s"])


def test_noise_dataset_has_cifar10_shape_and_size():
    from harness.data.tensors import load_dataset

    data = load_dataset("noise")
    assert data.train.inputs.shape == (50_000, 3, 32, 32) and len(data.test) == 10_000
    assert data.train.inputs.dtype == torch.uint8 and not data.spec.in_reference
    again = load_dataset("noise")
    assert torch.equal(again.train.inputs[:10], data.train.inputs[:10])


@pytest.mark.slow
def test_instrument_overhead_runs_both_ways():
    from harness.bench.overheads import instrument_overhead

    out = instrument_overhead(bench("resnet20", "digits"), "batch_norm", epochs=1, limit_train=128)
    assert len(out["on_wall_s"]) == len(out["off_wall_s"]) == 1  # the warm-up round is not counted
    assert out["overhead"] == pytest.approx(out["on_median_s"] / out["off_median_s"] - 1)
    assert 0 < out["probe_fraction_median"] < 1 and out["steps"] == 1


def test_split_overhead_runs_both_ways_at_two_lengths_and_projects(monkeypatch):
    """The bookkeeping of harness bench --split, with an executor that answers at once (the runs
    themselves, split and in process, are what the rest of the suite tests)."""
    from harness.bench import overheads
    from harness.execution import local as executors

    from records import make_record

    seen = []

    def fake_run(self, tasks, store, slots=None):
        (task,) = tasks
        seen.append((self.isolation.untrusted, task.spec.recipe.epochs))
        record = make_record("b", "1" * 64, "resnet20-digits", 0, 50.0, epochs=task.spec.recipe.epochs)
        record["eval_s"] = (0.6 if self.isolation.untrusted else 0.5) * task.spec.recipe.epochs
        return [record]

    monkeypatch.setattr(executors.LocalExecutor, "run", fake_run)
    out = overheads.split_overhead(Bench("resnet20", "digits", "cpu", 2, progress=lambda m: None),
                                   (1, 2), 128, 64)
    assert sorted(seen) == sorted([(u, e) for u in (False, True) for e in (1, 2)] * 2)
    assert set(out["median_s"]) == {"in-process-1", "in-process-2", "split-1", "split-2"}
    assert out["per_epoch_eval_s"] == pytest.approx(0.1)
    assert out["per_epoch_s"] == max(out["per_epoch_wall_s"], out["per_epoch_eval_s"], 0.0)
    # The projection is the measured costs over a protocol run at the speed measured here: the
    # fabricated epochs take 1 s each for 128 + 64 images.
    assert out["protocol_epoch_s"] == pytest.approx(1.0 * 60_000 / 192)
    expected = (max(out["fixed_s"], 0) + 200 * out["per_epoch_s"]) / out["protocol_run_s"]
    assert out["projected_protocol_overhead"] == pytest.approx(expected)


def test_a_track_is_benched_against_its_bare_step_without_a_reference(tmp_path):
    """MLPs, RNNs and Transformers have no reference pipeline; the harness's epoch is compared with
    the bare step of the track's recipe, on random data of the real dataset's kind when absent."""
    tokens, source = dataset_or_random("imdb", str(tmp_path))
    assert source == "random" and tokens.train.inputs.dtype == torch.int64
    assert tuple(tokens.train.inputs.shape) == (25_000, 256) and int(tokens.train.inputs.min()) >= 2
    out = run(bench("mlp3x100", "breast_cancer"), [], steps=2, compiled=False, workers=0)
    assert out["track"] == "mlp" and out["reference_median"] is None
    assert out["ratio_harness_over_reference"] is None and out["harness_median"] > 0
    assert out["recipe_epochs"] == 50 and out["projected_run_s"] > 0
    with pytest.raises(ValueError, match="lstm2 \\(rnn track\\) takes sequence or tokens"):
        run(bench("lstm2", "digits"), [], steps=1, compiled=False)
    costs = norm_costs(bench("lstm2", "digits_rows"), {"batch_norm": torch.nn.BatchNorm1d,
                                                       "dyt": load("dyt").norm_class},
                       steps=1, compiled=False)
    assert costs["batch_norm"]["eager_ratio"] == 1.0 and costs["dyt"]["eager_ratio"] > 0

"""Each track's recipe, suites and command-line paths: AdamW, warm-up + cosine, label smoothing and
clipping as documented; suites that hold one track's architectures on data they can take."""

import json
import math
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.engine.train import make_optimizer, make_scheduler
from harness.errors import SuiteError
from harness.protocol.recipe import PROTOCOL_RECIPE, TRACK_RECIPES, Recipe
from harness.protocol.spec import recipe_id
from harness.protocol.suites import _parse, all_suites, load_suite


def test_the_vit_lite_recipe_is_the_papers():
    r = TRACK_RECIPES["transformer"]
    assert (r.optimizer, r.lr, r.weight_decay, r.batch_size, r.epochs) == ("adamw", 5.5e-4, 6e-2, 128, 300)
    assert (r.schedule, r.warmup_epochs, r.warmup_lr, r.min_lr, r.label_smoothing) == (
        "warmup_cosine", 10, 1e-5, 1e-5, 0.1)
    assert TRACK_RECIPES["cnn"] is PROTOCOL_RECIPE


def test_warmup_cosine_follows_timms_scheduler_epoch_by_epoch():
    r = TRACK_RECIPES["transformer"]
    # timm CosineLRScheduler(t_initial=300, warmup_t=10, warmup_lr_init=1e-5, lr_min=1e-5)
    assert r.lr_at(0) == pytest.approx(1e-5)
    assert r.lr_at(5) == pytest.approx(1e-5 + 5 * (5.5e-4 - 1e-5) / 10)
    assert r.lr_at(10) == pytest.approx(1e-5 + 0.5 * (5.5e-4 - 1e-5) * (1 + math.cos(math.pi * 10 / 300)))
    assert r.lr_at(299) == pytest.approx(1e-5, rel=1e-2)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, r)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 6e-2
    scheduler = make_scheduler(optimizer, r)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([r.lr_at(e) for e in range(12)])


def test_recipes_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="warmup_epochs must be at least 0 and fewer than epochs"):
        replace(TRACK_RECIPES["transformer"], epochs=5)
    with pytest.raises(ValueError, match="needs schedule 'warmup_cosine'"):
        Recipe(warmup_epochs=2)
    with pytest.raises(ValueError, match="label_smoothing"):
        Recipe(label_smoothing=1.0)
    with pytest.raises(ValueError, match="grad_clip"):
        Recipe(grad_clip=0.0)


def test_new_recipe_fields_leave_the_cnn_suites_ids_as_they_were():
    # The ids of records written before these fields existed (harness.protocol.recipe.ADDED_FIELDS).
    assert recipe_id(PROTOCOL_RECIPE, None, None) == recipe_id(Recipe(), None, None)
    assert set(Recipe().identity()) == {"epochs", "batch_size", "test_batch_size", "lr", "momentum",
                                        "weight_decay", "nesterov", "schedule"}
    assert load_suite("default").recipe_id() == "b5eba1667f0be853"


def test_every_track_has_a_suite_and_a_cpu_sized_smoke_suite():
    tracks = {s.name: s.track for s in all_suites()}
    for track in ("mlp", "rnn", "transformer"):
        assert tracks[track] == track and tracks[f"{track}_smoke"] == track
    assert tracks["default"] == "cnn" and load_suite("transformer").recipe == TRACK_RECIPES["transformer"]
    assert load_suite("transformer_smoke").recipe.optimizer == "adamw"


BASE = {"name": "x", "version": 1, "seeds": [0]}


@pytest.mark.parametrize("data, message", [
    ({"track": "mlp", "settings": [{"arch": "resnet20", "dataset": "digits"}]},
     "resnet20 is an architecture of the cnn track, not of this file's mlp track"),
    ({"settings": [{"arch": "mlp3x100", "dataset": "breast_cancer"}]},
     "mlp3x100 is an architecture of the mlp track, not of this file's cnn track"),
    ({"track": "rnn", "settings": [{"arch": "lstm2", "dataset": "digits"}]},
     "lstm2 (rnn track) takes sequence or tokens inputs; digits holds image"),
    ({"track": "gan", "settings": [{"arch": "resnet20", "dataset": "digits"}]}, "unknown track 'gan'"),
    ({"track": "transformer", "recipe": {"label_smoothing": 0.0},
      "settings": [{"arch": "vit_lite2", "dataset": "digits"}]},
     "trains with the transformer track's label_smoothing"),
])
def test_a_suite_is_checked_against_its_track_when_it_is_loaded(data, message):
    with pytest.raises(SuiteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _parse({**BASE, **data}, "x.toml")


def test_a_suite_may_resize_its_tracks_recipe():
    suite = _parse({**BASE, "track": "transformer", "recipe": {"epochs": 4, "warmup_epochs": 1},
                    "settings": [{"arch": "vit_lite2", "dataset": "digits"}]}, "x.toml")
    assert suite.recipe == replace(TRACK_RECIPES["transformer"], epochs=4, warmup_epochs=1)


def test_eval_trains_with_the_tracks_recipe(tmp_path):
    args = ["eval", "layer_norm_per_position", "--arch", "transformer4", "--dataset", "digits_rows",
            "--epochs", "2", "--limit-train", "64", "--limit-test", "32", "--results", str(tmp_path),
            "--json"]
    result = CliRunner().invoke(main, args)  # the recipe's 10 warm-up epochs, scaled to 2: none
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["config"]["warmup_epochs"] == 0 and record["epochs"][0]["lr"] == pytest.approx(
        replace(TRACK_RECIPES["transformer"], epochs=2, warmup_epochs=0).lr_at(0))
    result = CliRunner().invoke(main, args + ["--warmup-epochs", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["config"]["optimizer"] == "adamw" and record["config"]["label_smoothing"] == 0.1
    assert [round(e["lr"], 8) for e in record["epochs"]] == [1e-5, pytest.approx(
        replace(TRACK_RECIPES["transformer"], epochs=2, warmup_epochs=1).lr_at(1))]


def test_list_by_track_and_baselines_that_declare_it():
    result = CliRunner().invoke(main, ["list", "--track", "rnn", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.output)["tracks"]
    assert list(listed) == ["rnn"] and set(listed["rnn"]["architectures"]) == {"lstm2", "gru2"}
    assert "imdb" in listed["rnn"]["datasets"] and "digits" not in listed["rnn"]["datasets"]
    assert "dyt" in listed["rnn"]["baselines"] and "switchable_norm" not in listed["rnn"]["baselines"]
    assert listed["rnn"]["recipe"]["grad_clip"] == 1.0
    out = CliRunner().invoke(main, ["baselines", "run", "--track", "mlp", "--only", "switchable_norm",
                                    "--suite", "mlp_smoke"])
    assert out.exit_code == 2 and "do(es) not declare the mlp track" in out.output
    out = CliRunner().invoke(main, ["submit", "batch_norm", "--name", "x", "--track", "mlp",
                                    "--suite", "default"])
    assert out.exit_code == 2 and "belongs to the cnn track, not mlp" in out.output

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import SuiteError
from harness.protocol.recipe import PROTOCOL_RECIPE
from harness.protocol.suites import _parse, hidden_in, load_suite, suite_names


def test_default_suite_is_the_reference():
    suite = load_suite("default")
    assert [(s.key, s.hidden) for s in suite.settings] == [
        ("resnet56-cifar100", False), ("mobilenetv2-fmnist", False), ("resnet110-cifar100", True)]
    assert suite.seeds == (42, 123, 456)
    assert suite.recipe == PROTOCOL_RECIPE and suite.limit_train is None
    assert [s.key for s in suite.settings_for(final=False)] == ["resnet56-cifar100", "mobilenetv2-fmnist"]
    assert len(suite.settings_for(final=True)) == 3


def test_smoke_suite_is_small_and_has_a_hidden_setting():
    suite = load_suite("smoke")
    assert {s.dataset for s in suite.settings} == {"digits"} and len(suite.seeds) == 2
    assert any(s.hidden for s in suite.settings) and suite.recipe.epochs <= 5
    assert suite.recipe_id() != load_suite("default").recipe_id()
    assert set(suite_names()) >= {"default", "smoke"}


def test_hidden_lookup():
    assert hidden_in("resnet110", "cifar100") == ["default"]
    assert hidden_in("resnet56", "cifar100") == []


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "version": 1, "seeds": [1], "settings": [{"arch": "resnet18", "dataset": "cifar10"}]},
     "unknown architecture"),
    ({"name": "x", "version": 1, "seeds": [1, 1], "settings": [{"arch": "resnet20", "dataset": "cifar10"}]},
     "distinct"),
    ({"name": "x", "version": 1, "seeds": [1], "settings": []} | {"recipe": {"lr_warmup": 5}},
     "unknown recipe field"),
    ({"name": "x", "version": 1, "seeds": [1]}, "missing field 'settings'"),
    ({"name": "x", "version": 1, "seeds": [1],
      "settings": [{"arch": "resnet20", "dataset": "cifar10", "visibility": "secret"}]}, "visibility"),
])
def test_invalid_suites(data, message):
    with pytest.raises(SuiteError, match=message):
        _parse(data, "test.toml")


def test_eval_refuses_hidden_settings_unless_allowed():
    result = CliRunner().invoke(main, ["eval", "batch_norm", "--arch", "resnet110", "--dataset", "cifar100"])
    assert result.exit_code == 2 and "hidden setting of suite default" in result.stderr
    assert "--allow-hidden" in result.stderr


def test_unknown_suite_is_one_line():
    result = CliRunner().invoke(main, ["submit", "batch_norm", "--name", "x", "--suite", "nope"])
    assert result.exit_code == 2 and "no suite named 'nope'" in result.stderr

"""The command line: help, one-line errors for every broken submission, reference formats."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from harness.cli import main

from conftest import FIXTURES, ROOT

SMOKE = ["--arch", "resnet20", "--dataset", "digits", "--epochs", "1",
         "--limit-train", "130", "--limit-test", "50"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help():
    result = invoke("--help")
    assert result.exit_code == 0 and "eval" in result.output
    result = invoke("eval", "--help")
    assert result.exit_code == 0
    for flag in ("--arch", "--dataset", "--seed", "--epochs", "--batch-size", "--data-root",
                 "--device", "--results", "--limit-train", "--limit-test", "--quiet", "--verbose"):
        assert flag in result.output


@pytest.mark.parametrize("fixture, expected", [
    ("missing.py", "no such file"),
    ("syntax_error.py", "syntax_error.py:6: syntax error"),
    ("import_error.py", "import_error.py:2: import error: no module named 'norm_layers_that_do_not_exist'"),
    ("no_class.py", "defines no CustomNorm class"),
    ("not_a_module.py", "CustomNorm must be a class deriving from torch.nn.Module"),
    ("raises_at_import.py", "raises_at_import.py:3: ValueError while importing"),
    ("bad_constructor.py", "missing 1 required positional argument: 'groups'"),
])
def test_broken_submission_gives_one_line(fixture, expected, tmp_path):
    result = invoke("eval", FIXTURES / fixture, *SMOKE, "--results", tmp_path)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_not_a_python_file(tmp_path):
    path = tmp_path / "norm.txt"
    path.write_text("class CustomNorm: pass\n")
    result = invoke("eval", path, *SMOKE)
    assert result.exit_code == 1 and "not a .py file" in result.stderr


@pytest.mark.slow
def test_broken_submission_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "eval", str(FIXTURES / "syntax_error.py"),
                           *SMOKE], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    verbose = subprocess.run([sys.executable, "-m", "harness", "eval",
                              str(FIXTURES / "syntax_error.py"), *SMOKE, "--verbose"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_usage_errors_exit_2():
    assert invoke("eval", FIXTURES / "reference_format.py", "--arch", "resnet18",
                  "--dataset", "digits").exit_code == 2
    assert invoke("eval", FIXTURES / "reference_format.py", "--arch", "resnet20").exit_code == 2
    assert invoke("eval", FIXTURES / "reference_format.py", *SMOKE, "--epochs", "0").exit_code == 2


def test_unavailable_device_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke("eval", ROOT / "custom_norm.py", *SMOKE, "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA GPU" in result.stderr


def test_missing_dataset_is_one_line(tmp_path, no_network):
    result = invoke("eval", ROOT / "custom_norm.py", "--arch", "resnet20", "--dataset", "cifar10",
                    "--data-root", tmp_path / "nothing")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "cifar-10-batches-py/data_batch_1" in line


def test_reference_format_file_uses_only_its_customnorm(tmp_path):
    result = invoke("eval", FIXTURES / "reference_format.py", *SMOKE, "--results", tmp_path)
    assert result.exit_code == 0, result.output
    assert "TEST_METRICS: test_acc=" in result.output
    (record_path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["submission"]["name"] == "reference_format" and record["status"] == "ok"


def test_eval_with_tiny_cifar10_through_the_real_loader(cifar10_root, tmp_path):
    root, _ = cifar10_root
    result = invoke("eval", ROOT / "custom_norm.py", "--arch", "resnet20", "--dataset", "cifar10",
                    "--epochs", "1", "--data-root", root, "--results", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (record_path,) = (tmp_path / "out" / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["data"]["train_size"] == 30 and record["data"]["test_size"] == 10
    assert record["config"]["num_classes"] == 10
    assert record["deviations"] == ["epochs=1 (protocol: 200)"]


@pytest.mark.slow
def test_template_runs_with_reference_flags(tmp_path):
    env = dict(os.environ, HARNESS_DATA=str(tmp_path / "none"))
    proc = subprocess.run([sys.executable, str(ROOT / "custom_norm.py"), "--arch", "resnet20",
                           "--dataset", "digits", "--seed", "7", "--epochs", "1",
                           "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "TRAIN_METRICS: epoch=1 train_loss=" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("TEST_METRICS: test_acc=")
    (record_path,) = (tmp_path / "out" / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["config"]["seed"] == 7 and record["submission"]["name"] == "custom_norm"
    bad = subprocess.run([sys.executable, str(ROOT / "custom_norm.py"), "--arch", "nope",
                          "--dataset", "digits"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_the_reference_flags_accept_allow_hidden_as_harness_eval_does():
    from harness.cli.reference import eval_argv

    argv = eval_argv("custom_norm.py", ["--arch", "resnet110", "--dataset", "cifar100", "--allow-hidden",
                                        "--output-dir", "out"])
    assert argv[:2] == ["eval", "custom_norm.py"] and argv[-1] == "--allow-hidden"
    assert argv[argv.index("--results") + 1] == "out"
    assert "--allow-hidden" not in eval_argv("x.py", ["--arch", "resnet20", "--dataset", "cifar10"])
    refused = subprocess.run([sys.executable, str(ROOT / "custom_norm.py"), "--arch", "resnet110",
                              "--dataset", "cifar100", "--output-dir", "out"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--allow-hidden" in refused.stderr


@pytest.mark.slow
def test_json_means_json_on_stdout_and_nothing_else(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "eval", "batch_norm", *SMOKE, "--json",
                          "--results", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)  # the record, and nothing else
    assert record["submission"]["name"] == "batch_norm" and record["status"] == "ok"
    assert "TRAIN_METRICS" not in out.stdout
    listed = json.loads(subprocess.run([sys.executable, "-m", "harness", "list", "--json"],
                                       capture_output=True, text=True, timeout=120).stdout)
    assert "batch_norm" in listed["baselines"] and "demo" in listed["suites"]


def test_every_help_reads_plainly():
    """No reStructuredText or Markdown backticks in any --help, and every command has one."""
    import click

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    from harness.cli import main as root

    for path in walk(root, []):
        result = invoke(*path, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, path
        assert "`" not in result.output, (path, [ln for ln in result.output.splitlines() if "`" in ln])
    assert isinstance(root, click.Group)


def test_warm_up_options_say_what_applies(tmp_path):
    refused = invoke("eval", "batch_norm", "--arch", "mlp3x100", "--dataset", "breast_cancer",
                     "--warmup-epochs", "1", "--epochs", "2", "--results", tmp_path)
    assert refused.exit_code == 2 and "recipe is cosine, without warm-up" in refused.output
    assert "(pass --warmup-epochs)" not in refused.output
    short = invoke("eval", "batch_norm", "--arch", "transformer4", "--dataset", "digits_rows",
                   "--epochs", "2", "--limit-train", "128", "--limit-test", "64", "--results", tmp_path)
    assert short.exit_code == 0, short.output  # the recipe's 10 warm-up epochs, scaled to 2
    assert "warm-up: 0 epochs (the recipe's 10 of 300, scaled to 2)" in short.output
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert record["config"]["warmup_epochs"] == 0 and record["config"]["epochs"] == 2


def test_options_gathered_into_a_group_arrive_as_one_object():
    """cli.common.gathered: the options named as a dataclass's fields come as one instance, the
    others as they were; --help still lists each option."""
    from dataclasses import dataclass

    import click

    from harness.cli.common import gathered

    @dataclass(frozen=True)
    class Group:
        a: int
        b: str

    @click.command()
    @click.option("--a", type=int, default=1, help="first")
    @click.option("--b", default="x")
    @click.option("--c", type=int, default=0)
    @gathered(Group, "group")
    def command(group: Group, c: int) -> None:
        click.echo(f"{group.a} {group.b} {c} {type(group).__name__}")

    assert CliRunner().invoke(command, ["--a", "3", "--c", "4"]).output == "3 x 4 Group\n"
    shown = CliRunner().invoke(command, ["--help"]).output
    assert "--a INTEGER  first" in shown and "--b TEXT" in shown and "--c INTEGER" in shown

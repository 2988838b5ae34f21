"""harness check: baselines pass with their expected warnings; broken layers fail with their reason."""

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.protocol.entries import baseline_names
from harness.vetting.check import FAIL, PASS, SKIP, WARN, run_checks
from harness.vetting.layer_checks import model_channel_counts

from conftest import FIXTURES, ROOT

# What each shipped layer is expected to warn about, (track, check); everything else must pass.
EXPECTED_WARNINGS = {
    "batch_instance_norm": {("cnn", "eval-batch-independent")},  # batch statistics at evaluation
    "switchable_norm": {("cnn", "eval-batch-independent")},
    "group_norm": {("cnn", "shape")},  # one channel per group: raises on 1x1 maps
    "instance_norm": {("cnn", "shape")},  # needs more than one spatial element
    # BatchNorm1d refuses a training batch of one [1, C] sample.
    "batch_norm": {("mlp", "shape")},
}

SUBMISSIONS = ["selective_norm", "no_norm", "dropout_only", "norm_only", "dropout_then_norm"]
# The two arms that end in torch's BatchNorm refuse a training batch of one [1, C] sample, as it
# does; SelectiveNorm computes its statistics itself and takes it.
SUBMISSION_WARNINGS = {"norm_only": {("mlp", "shape")}, "dropout_then_norm": {("mlp", "shape")}}
# The edit loop (make test-fast) checks these in full; the full suite checks every shipped layer.
FAST_TIER = {"batch_norm", "group_norm", "selective_norm"}


def tiered(names):
    return [n if n in FAST_TIER else pytest.param(n, marks=pytest.mark.slow) for n in names]


def test_all_required_baselines_exist():
    required = {"batch_norm", "group_norm", "switchable_norm", "batch_instance_norm",
                "switchable_norm_paper", "batch_instance_norm_paper", "layer_norm",
                "instance_norm", "rms_norm"}
    assert required <= set(baseline_names())


@pytest.mark.parametrize("name", tiered(baseline_names()))
def test_baseline_passes_with_expected_warnings(name):
    # What is tested is the layer's correctness; a generous limit keeps a loaded machine from
    # turning a 2 s gradcheck into a time-out (seen once when two test suites shared 2 cores).
    report = run_checks(name, timeout=120)
    assert report.ok, [r for r in report.rows if r.status == FAIL]
    assert {(r.track, r.name) for r in report.rows if r.status == WARN} == EXPECTED_WARNINGS.get(name, set())
    assert all(r.status in (PASS, WARN) for r in report.rows)


@pytest.mark.parametrize("name", tiered(SUBMISSIONS))
def test_our_submissions_pass(name):
    report = run_checks(str(ROOT / "submissions" / f"{name}.py"), timeout=120)
    assert report.ok
    assert {(r.track, r.name) for r in report.rows if r.status == WARN} == SUBMISSION_WARNINGS.get(name, set())
    assert set(report.fits()) == {"cnn", "mlp", "rnn", "transformer"}  # every track declared


def test_channel_counts_cover_every_model():
    counts = model_channel_counts()
    for c in (16, 32, 64, 128, 256, 512, 96, 144, 960, 1280):
        assert c in counts


BROKEN = [
    # fixture, the check that fails, a fragment of its reason
    ("missing.py", "import", "no such file"),
    ("syntax_error.py", "import", "syntax error"),
    ("import_error.py", "import", "no module named 'norm_layers_that_do_not_exist'"),
    ("no_class.py", "import", "defines no CustomNorm class"),
    ("not_a_module.py", "import", "must be a class deriving from torch.nn.Module"),
    ("bad_constructor.py", "construct", "missing 1 required positional argument: 'groups'"),
    ("forward_raises.py", "shape", "forward raised RuntimeError: not implemented yet"),
    ("wrong_shape.py", "shape", "output shape [2, 8, 8, 8] != input shape [2, 16, 8, 8]"),
    ("wrong_dtype.py", "dtype", "float32 input gave float64 output"),
    ("nan_output.py", "finite", "non-finite output on all-zero input"),
    ("forward_hangs.py", "shape", "s of CPU time (1 s, scaled by this machine's speed"),
    ("forward_sleeps.py", "shape", "s (a forward that hangs?)"),
    ("wrong_gradient.py", "gradcheck", "analytical gradient differs from finite differences"),
    ("stochastic_eval.py", "eval-deterministic", "two evaluations of the same batch differ"),
    ("eval_updates_buffers.py", "buffers", "evaluation changed buffer(s) running_mean"),
    ("state_outside_state_dict.py", "state-dict", "evaluates differently"),
]


@pytest.mark.slow
@pytest.mark.parametrize("fixture, check, reason", BROKEN)
def test_broken_layer_fails_with_its_reason(fixture, check, reason):
    report = run_checks(str(FIXTURES / fixture), timeout=1)
    assert not report.ok
    (row,) = [r for r in report.rows if r.name == check]
    assert row.status == FAIL and reason in row.detail
    assert "\n" not in row.detail


def test_a_fatal_check_out_of_time_skips_the_remaining_checks():
    report = run_checks(str(FIXTURES / "forward_hangs.py"), timeout=1)
    after = report.rows[[r.name for r in report.rows].index("shape") + 1:]
    assert after and all(r.status == SKIP for r in after)


@pytest.mark.slow  # waits out a time limit scaled by the machine's speed
def test_a_non_fatal_check_out_of_time_is_a_warning_and_the_rest_run():
    report = run_checks(str(FIXTURES / "slow_in_float64.py"), timeout=3)
    rows = {r.name: r for r in report.rows}
    assert report.ok and rows["gradcheck"].status == WARN
    assert "s of CPU time (3 s, scaled by" in rows["gradcheck"].detail
    assert all(r.status == PASS for name, r in rows.items() if name != "gradcheck")


def test_limits_count_the_layers_own_work_and_scale_with_the_machine(monkeypatch):
    """The harness's imports and tamper baseline are not the layer's time (they happen before the
    clock starts), and a slower machine gets proportionally more time."""
    import harness.vetting.check as check

    assert check.machine_speed.__wrapped__() >= 1.0  # measured, never below the reference
    monkeypatch.setattr(check, "machine_speed", lambda: 40.0)
    report = run_checks(str(FIXTURES / "forward_hangs.py"), timeout=0.05)
    (row,) = [r for r in report.rows if r.name == "shape"]
    assert "took more than 2 s of CPU time (0.05 s, scaled by this machine's speed: 40.00x" in row.detail


@pytest.mark.slow
def test_every_baseline_passes_its_checks_beside_two_busy_processes():
    """On a busy machine (two CPU-bound processes beside it), no shipped baseline runs out of
    time and none fails."""
    import subprocess
    import sys

    from harness.protocol.entries import baseline_names

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        reports = {name: run_checks(name) for name in baseline_names()}
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert len(reports) >= 9
    problems = {name: [(r.name, r.status, r.detail) for r in rep.rows
                       if r.status == FAIL or "time" in r.detail and r.status != PASS]
                for name, rep in reports.items()}
    assert problems == {name: [] for name in reports}


def test_init_override_is_a_warning():
    report = run_checks(str(FIXTURES / "own_init.py"))
    (row,) = [r for r in report.rows if r.name == "init-override"]
    assert report.ok and row.status == WARN and "weight" in row.detail


def test_cli_table_json_and_exit_codes():
    runner = CliRunner()
    ok = runner.invoke(main, ["check", "switchable_norm"])
    assert ok.exit_code == 0
    assert "WARN" in ok.output and "batch-dependent at evaluation" in ok.output
    assert "13 passed, 1 warned, 0 failed" in ok.output
    bad = runner.invoke(main, ["check", str(FIXTURES / "wrong_dtype.py"), "--json"])
    assert bad.exit_code == 1
    payload = json.loads(bad.output)
    assert payload["ok"] is False and len(payload["sha256"]) == 64
    assert {"name": "dtype", "status": "fail"}.items() <= next(
        c for c in payload["checks"] if c["name"] == "dtype").items()
    missing = runner.invoke(main, ["check", "no_such_norm"])
    assert missing.exit_code == 1 and "not a baseline name" in missing.output
    assert "Traceback" not in missing.output


FATAL = [f for f in BROKEN if f[1] in ("import", "construct", "shape", "dtype", "finite")]


@pytest.mark.slow
@pytest.mark.parametrize("fixture, check, reason", FATAL)
def test_eval_refuses_a_layer_that_fails_a_fatal_check(fixture, check, reason, tmp_path):
    result = CliRunner().invoke(main, ["eval", str(FIXTURES / fixture), "--arch", "resnet20",
                                       "--dataset", "digits", "--epochs", "1", "--check-timeout", "1",
                                       "--results", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_eval_accepts_a_baseline_name_and_records_its_warnings(tmp_path):
    result = CliRunner().invoke(main, ["eval", "switchable_norm", "--arch", "resnet20", "--dataset",
                                       "digits", "--epochs", "1", "--limit-train", "130",
                                       "--limit-test", "40", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: batch-dependent at evaluation" in result.stderr
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["submission"]["name"] == "switchable_norm"
    assert record["submission"]["path"].endswith("baselines/switchable_norm.py")
    statuses = {c["name"]: c["status"] for c in record["checks"]}
    assert statuses["eval-batch-independent"] == "warn" and statuses["shape"] == "pass"


def test_list_shows_archs_datasets_and_baselines():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for word in ("resnet56", "mobilenetv2", "cifar100", "fashionmnist", "digits", "switchable_norm_paper",
                 "Switchable Norm as the reference benchmark defines it"):
        assert word in result.output


def test_a_cnn_only_layer_is_checked_per_track_and_fits_the_cnn_track_only():
    """The reference's own file (no TRACKS): checked on the cnn layout by default; asked for every
    track, it fits the CNNs and fails the others at 'shape', the rest of those tracks skipped."""
    path = str(ROOT / "custom_norm.py")
    assert {r.track for r in run_checks(path).rows if r.track} == {"cnn"}
    report = run_checks(path, tracks=("cnn", "mlp", "transformer"))
    assert report.fits() == {"cnn": True, "mlp": False, "transformer": False}
    for track, shape in (("mlp", "[2, 100]"), ("transformer", "[2, 128, 8]")):
        rows = [r for r in report.rows if r.track == track]
        assert rows[0].name == "construct" and rows[0].status == PASS
        assert rows[1].name == "shape" and rows[1].status == FAIL and shape in rows[1].detail
        assert all(r.status == SKIP for r in rows[2:]) and len(rows) > 5


def test_check_cli_takes_a_track(tmp_path):
    result = CliRunner().invoke(main, ["check", str(ROOT / "custom_norm.py"), "--track", "mlp",
                                       "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["fits"] == {"mlp": False} and not report["ok"]
    result = CliRunner().invoke(main, ["check", "layer_norm", "--track", "rnn"])
    assert result.exit_code == 0 and "rnn track" in result.output, result.output
    assert CliRunner().invoke(main, ["check", "layer_norm", "--track", "nope"]).exit_code == 2

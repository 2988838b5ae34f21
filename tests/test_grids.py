"""Hyperparameter grids: layer parameters in a run's identity, grid axes in study files, the
reports along each axis, the cost estimate of a dry run and the results API (issue 18)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from harness import results
from harness.bench.estimate import Estimate, Timing, run_seconds
from harness.cli import main
from harness.engine.runner import run_eval
from harness.errors import SuiteError
from harness.execution.sweep import run_study
from harness.leaderboard.study_report import (
    StudyCell,
    along,
    build_report,
    compare_with_reference,
    reference_point,
    sensitivity,
)
from harness.protocol.entries import declared_params, parse_param
from harness.protocol.recipe import Recipe
from harness.protocol.spec import RunSpec
from harness.protocol.studies import load_study
from harness.store.plan import plan_study
from harness.store.results import ResultsStore

from conftest import ROOT, needs_sandbox
from inprocess import InProcess

SHA = "a" * 64
ARMS = """
[[entries]]
name = "norm only"
source = "{root}/submissions/norm_only.py"

[[entries]]
name = "SelectiveNorm"
source = "{root}/submissions/selective_norm.py"

[[settings]]
arch = "resnet20"
dataset = "digits"
"""


def grid_study(tmp_path, grid: str, head: str = "", name: str = "grid.toml"):
    path = tmp_path / name
    path.write_text(f'name = "grid"\nseeds = [0, 1]\nreference = "norm only"\n{head}\n{grid}\n'
                    + ARMS.format(root=ROOT))
    return path


GRID = "[grid.recipe]\nlr = [0.1, 0.05]\n[grid.params]\np = [0.1, 0.3]\n"


# -- layer parameters in a run's identity ---------------------------------------------------------

def test_a_run_without_parameters_keeps_its_key_and_one_with_them_is_another_run():
    plain = RunSpec("f.py", "resnet20", "digits", sha256=SHA)
    assert plain.key().count("|") == 6  # SHA|ARCH|DATASET|SEED|RECIPE|PROTOCOL|PRECISION, as before
    given = plain.with_(params={"p": 0.2, "eps": 1e-3})
    assert given.key().startswith(plain.key() + "|params=")
    assert given.key().endswith('params={"eps": 0.001, "p": 0.2}')  # sorted: one key per meaning
    assert given.key() != plain.with_(params={"p": 0.3}).key()
    assert RunSpec.from_json(json.loads(json.dumps(given.to_json()))) == given
    assert given.to_json()["params"] == {"eps": 0.001, "p": 0.2}
    record = {"config": {"arch": "resnet20", "dataset": "digits", "seed": 42, **Recipe().identity(),
                         "params": {"p": 0.2, "eps": 1e-3}},
              "submission": {"sha256": SHA}, "protocol_version": plain.protocol}
    assert RunSpec.of_record(record).key() == given.key()
    record["config"].pop("params")  # a record from before parameters existed
    assert RunSpec.of_record(record).key() == plain.key()


@pytest.mark.parametrize("params", [{"num_features": 3}, {"p": [0.1]}, {"2x": 1}, {"p": float("nan")}])
def test_a_layer_parameter_is_a_keyword_with_a_scalar_value(params):
    with pytest.raises(ValueError):
        RunSpec("f.py", "resnet20", "digits", params=params)


def test_parameters_on_the_command_line_are_read_as_json():
    assert parse_param("p=0.2") == ("p", 0.2)
    assert parse_param("affine=true") == ("affine", True)
    assert parse_param("mode=batch") == ("mode", "batch")
    for bad in ("=3", "p", "num_features=3", "p=[1]"):
        with pytest.raises(ValueError):
            parse_param(bad)


def test_the_parameters_a_layer_takes_are_read_without_importing_it(tmp_path):
    assert declared_params(ROOT / "submissions/selective_norm.py") == (
        {"p": "0.1", "eps": "1e-05", "momentum": "0.1"}, False)
    assert declared_params(ROOT / "submissions/norm_only.py") == ({}, False)
    cases = {
        "class CustomNorm:\n    def __init__(self, c, k=1, /, scale=2, *, shift):\n        pass\n":
            ({"scale": "2", "shift": ""}, False),  # k is positional-only: no keyword can set it
        "class CustomNorm:\n    def __init__(self, channels, a=1, **rest):\n        pass\n":
            ({"a": "1"}, True),
        "import torch\nclass CustomNorm(torch.nn.GroupNorm):\n    pass\n": None,
        "raise SystemExit\nCustomNorm = 3\n": None,
    }
    for i, (source, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}.py"
        path.write_text(source)
        assert declared_params(path) == expected, source


def test_check_builds_the_layer_with_its_parameters():
    runner = CliRunner()
    ok = runner.invoke(main, ["check", str(ROOT / "submissions/dropout_only.py"), "--param", "p=0.3",
                              "--track", "mlp", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["params"] == {"p": 0.3}
    bad = runner.invoke(main, ["check", str(ROOT / "submissions/dropout_only.py"), "--param", "p=1.5",
                               "--track", "mlp"])
    assert bad.exit_code == 1 and "construct" in bad.output and "p=1.5" in bad.output
    usage = runner.invoke(main, ["check", str(ROOT / "submissions/dropout_only.py"), "--param", "p"])
    assert usage.exit_code == 2 and "NAME=VALUE" in usage.output


# -- grids in study files -------------------------------------------------------------------------

def test_a_grid_expands_into_the_runs_each_entry_can_tell_apart(tmp_path):
    study = load_study(grid_study(tmp_path, GRID))
    assert [(a.name, a.kind, a.values) for a in study.axes] == [("lr", "recipe", (0.1, 0.05)),
                                                               ("p", "params", (0.1, 0.3))]
    assert len(study.points()) == 4
    norm_only, selective = study.entries
    assert norm_only.takes == frozenset() and "p" in selective.takes
    # norm only takes no p: one variant per lr, not per (lr, p)
    assert [dict(v.point) for v in study.variants(norm_only)] == [{"lr": 0.1}, {"lr": 0.05}]
    assert [v.params for v in study.variants(selective)] == [{"p": 0.1}, {"p": 0.3}] * 2
    assert study.run_count() == (2 + 4) * 1 * 2
    planned = plan_study(study, ResultsStore(tmp_path / "res"))
    assert len(planned) == 12 and len({r.key for r in planned}) == 12
    for run in planned:
        assert run.spec.recipe.lr == dict(run.point)["lr"]
        assert run.spec.layer_params == ({"p": dict(run.point)["p"]} if run.entry == "SelectiveNorm"
                                         else {})


def test_an_entry_can_fix_its_parameters(tmp_path):
    path = grid_study(tmp_path, "")
    path.write_text(path.read_text().replace(
        'source = "' + str(ROOT) + '/submissions/selective_norm.py"',
        'source = "' + str(ROOT) + '/submissions/selective_norm.py"\nparams = { p = 0.25 }'))
    study = load_study(path)
    assert study.entries[1].params == {"p": 0.25}
    assert [r.spec.layer_params for r in plan_study(study, ResultsStore(tmp_path / "r"))] == \
        [{}, {}, {"p": 0.25}, {"p": 0.25}]


@pytest.mark.parametrize("grid, message", [
    ("[grid.recipe]\ncolour = [1, 2]", "not a recipe field"),
    ("[grid.recipe]\nlr = []", "non-empty list"),
    ("[grid.recipe]\nlr = [0.1, 0.1]", "listed twice"),
    ("[grid.recipe]\nepochs = [0, 3]", "epochs"),
    ("[grid.recipe]\noptimizer = ['sgd', 'rmsprop']", "optimizer"),
    ("[grid.params]\nq = [1, 2]", "no entry's CustomNorm takes 'q'"),
    ("[grid.params]\np = [[0.1]]", "a value is a number"),
    ("[grid.other]\nx = [1]", "[grid.recipe] and [grid.params]"),
    ("[grid.recipe]\np = [0.1]\n[grid.params]\np = [0.2]", "not a recipe field"),
])
def test_a_bad_grid_is_refused_with_the_reason(tmp_path, grid, message):
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(grid_study(tmp_path, grid))


def test_a_parameter_an_entry_does_not_take_or_fixes_is_refused(tmp_path):
    path = grid_study(tmp_path, "")
    text = path.read_text()
    path.write_text(text.replace('norm_only.py"', 'norm_only.py"\nparams = { p = 0.2 }'))
    with pytest.raises(SuiteError, match="takes no parameter 'p'"):
        load_study(path)
    path.write_text(text.replace('selective_norm.py"', 'selective_norm.py"\nparams = { p = 0.2 }')
                    + "[grid.params]\np = [0.1]\n")
    with pytest.raises(SuiteError, match="fixes p"):
        load_study(path)


def test_the_shipped_grid_studies_are_the_issues_grid():
    full = load_study(ROOT / "studies/selective_norm_grid.toml")
    smoke = load_study(ROOT / "studies/selective_norm_grid_smoke.toml")
    for study in (full, smoke):
        assert [e.name for e in study.entries] == ["no norm", "dropout only", "norm only",
                                                   "dropout then norm", "SelectiveNorm"]
        assert {a.name: a.values for a in study.axes} == {"lr": (0.1, 0.02),
                                                         "p": (0.05, 0.1, 0.2, 0.3)}
        # the three arms that drop units take p; the other two run once per lr
        assert [len(study.variants(e)) for e in study.entries] == [2, 8, 2, 8, 8]
    assert full.recipe.deviations() == [] and len(full.settings) == 4
    assert full.run_count() == 28 * 4 * 3
    assert smoke.run_count() == 28 * 2 and {s.dataset for s in smoke.settings} == {"digits"}


# -- reports along each axis ----------------------------------------------------------------------

def _cells(study, means):
    """Cells whose best accuracies are ``means[(entry, point)] +- 0.1`` over two seeds."""
    out = {}
    for e in study.entries:
        for v in study.variants(e):
            m = means[(e.name, v.point)]
            c = StudyCell(e.name, "resnet20-digits", 2, [{"status": "ok"}] * 2, v.point)
            c.values, c.reach95, c.mean = [m - 0.1, m + 0.1], [3, 3], m
            out[(e.name, "resnet20-digits", v.point)] = c
    return out


def test_sensitivity_and_comparisons_follow_the_axes(tmp_path):
    study = load_study(grid_study(tmp_path, GRID))
    means = {("norm only", (("lr", 0.1),)): 80.0, ("norm only", (("lr", 0.05),)): 78.0}
    for lr in (0.1, 0.05):
        for p, m in ((0.1, 85.0), (0.3, 81.0)):
            means[("SelectiveNorm", (("lr", lr), ("p", p)))] = m - (lr == 0.05)
    cells = _cells(study, means)
    rows = sensitivity(study, along(study, cells, "resnet20-digits", "p"), "p")
    assert [(r["label"], r["flat"], r["range"], r["best"]) for r in rows] == [
        ("norm only [lr=0.1]", True, None, None), ("norm only [lr=0.05]", True, None, None),
        ("SelectiveNorm [lr=0.1]", False, 4.0, 0.1), ("SelectiveNorm [lr=0.05]", False, 4.0, 0.1)]
    by_lr = sensitivity(study, along(study, cells, "resnet20-digits", "lr"), "lr")
    assert by_lr[0]["range"] == 2.0 and by_lr[0]["best"] == 0.1  # norm only is not flat along lr
    # each SelectiveNorm cell is compared with norm only at its own lr
    assert reference_point(study, (("lr", 0.05), ("p", 0.3))) == (("lr", 0.05),)
    compare_with_reference(study, cells)
    versus = cells[("SelectiveNorm", "resnet20-digits", (("lr", 0.05), ("p", 0.3)))].versus
    assert versus["difference"] == pytest.approx(80.0 - 78.0) and versus["comparisons"] == 4


# -- the cost estimate ----------------------------------------------------------------------------

def test_a_runs_projected_time_is_its_steps_times_the_measured_step():
    spec = RunSpec("f.py", "resnet20", "digits", recipe=Recipe(epochs=3, batch_size=32),
                   limit_train=256)
    timing = Timing(step_s=0.2, test_batch_s=0.1, start_s=2.0)
    # 256 / 32 = 8 steps and 360 / 128 -> 3 test batches per epoch; three probes of a step each
    assert run_seconds(spec, timing) == pytest.approx(2.0 + 3 * (8 * 0.2 + 3 * 0.1) + 3 * 0.2)
    assert run_seconds(spec, timing, untrusted=True) == pytest.approx(run_seconds(spec, timing) + 2.0)
    full = RunSpec("f.py", "resnet56", "cifar100")  # the protocol: 200 epochs of 391 steps
    assert run_seconds(full, Timing(0.2, 0.1)) == pytest.approx(200 * (391 * 0.2 + 79 * 0.1) + 0.6)
    estimate = Estimate(3, [10.0, 10.0, 40.0], {}, jobs=2)
    assert estimate.total_s == 60.0 and estimate.wall_s == 40.0  # never below the longest run
    assert Estimate(2, [10.0, 10.0], {}, jobs=2, vetting_s=5.0).wall_s == 15.0  # vetting first


@pytest.mark.slow
def test_a_dry_run_shows_the_grid_and_its_measured_cost(tmp_path):
    runner = CliRunner()
    path = ROOT / "studies/selective_norm_grid_smoke.toml"
    out = runner.invoke(main, ["study", "run", str(path), "--results", str(tmp_path), "--dry-run",
                               "--jobs", "2", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["runs"] == data["to_run"] == 56 and len(data["planned"]) == 56
    assert {p["point"]["p"] for p in data["planned"] if p["entry"] == "SelectiveNorm"} == \
        {0.05, 0.1, 0.2, 0.3}
    cost = data["estimate"]
    shape = cost["shapes"][0]
    assert cost["jobs"] == 2 and len(cost["shapes"]) == 1 and shape["step_s"] > 0
    assert shape["start_measured"] == "a run" and shape["start_s"] > 0  # digits is on disk
    assert cost["wall_s"] == pytest.approx(cost["vetting_s"] + cost["total_s"] / 2, rel=0.01)
    assert cost["vetting_s"] > 0  # 5 entries, 3 of them with 4 values of p: 14 pairs
    text = runner.invoke(main, ["study", "run", str(path), "--results", str(tmp_path), "--dry-run",
                                "--only", "SelectiveNorm"])
    assert text.exit_code == 0, text.output
    assert "axis p (layer parameter): 0.05, 0.1, 0.2, 0.3" in text.output
    assert "16 run(s) to do of 16" in text.output and "projected: 16 runs" in text.output


# -- the results API ------------------------------------------------------------------------------

def test_the_results_api_reads_an_empty_folder_and_refuses_a_missing_one(tmp_path):
    ResultsStore(tmp_path / "res")
    (tmp_path / "res" / "runs").mkdir(parents=True, exist_ok=True)
    assert results.load(tmp_path / "res").empty and results.load_curves(tmp_path / "res").empty
    with pytest.raises(FileNotFoundError, match="not a results folder"):
        results.load(tmp_path / "nothing")


@pytest.mark.slow
def test_a_grid_study_runs_reports_per_axis_and_loads_as_a_dataframe(tmp_path):
    study = load_study(grid_study(tmp_path, GRID, 'limit_train = 64\nlimit_test = 64\n'
                                              '[recipe]\nepochs = 2\nbatch_size = 32\n'))
    store = ResultsStore(tmp_path / "results")
    ran = run_study(study, store, executor=InProcess(run_eval))
    assert sum(len(r.ran) for r in ran) == 12 and not any(r.failed for r in ran)
    again = run_study(study, store, executor=InProcess(run_eval))
    assert sum(len(r.ran) for r in again) == 0  # every grid point's run is found by its key
    status = CliRunner().invoke(main, ["status", "--study", str(study.path), "--results",
                                       str(store.root), "--all"])
    assert status.exit_code == 0 and "12 run(s): 12 done" in status.output
    assert "SelectiveNorm [lr=0.05, p=0.3]" in status.output and "norm only [lr=0.1]" in status.output

    index = build_report(study, store.root, tmp_path / "report")
    html = index.read_text()
    assert "Along lr" in html and "Along p" in html and "takes no p" in html
    assert "SelectiveNorm [lr=0.05, p=0.3]" in html
    report = json.loads((tmp_path / "report" / "study.json").read_text())
    assert len(report["cells"]) == 6 and {a["name"] for a in report["study"]["grid"]} == {"lr", "p"}
    assert {(s["axis"], s["label"]) for s in report["sensitivity"] if s["range"] is not None} == {
        ("lr", "norm only"), ("lr", "SelectiveNorm [p=0.1]"), ("lr", "SelectiveNorm [p=0.3]"),
        ("p", "SelectiveNorm [lr=0.1]"), ("p", "SelectiveNorm [lr=0.05]")}

    runs = results.load(store.root, study="grid")
    assert len(runs) == 12 and runs["key"].is_unique
    assert sorted(runs["config.params.p"].dropna().unique()) == [0.1, 0.3]
    assert runs.loc[runs["entry"] == "norm only", "config.params.p"].isna().all()
    assert set(runs["config.lr"]) == {0.1, 0.05} and runs["best_acc"].notna().all()
    curves = results.load_curves(store.root)
    assert len(curves) == 24 and set(curves["epoch"]) == {1, 2}
    merged = curves.merge(runs[["run_id", "config.lr"]], on="run_id")
    assert (merged["base_lr"] == merged["config.lr"]).all()

    # the documented example draws the report's figure from the API, with the report's numbers
    out = subprocess.run([sys.executable, str(ROOT / "docs/examples/accuracy_along_axis.py"),
                          str(store.root), "--study", "grid", "--axis", "p", "--by", "lr",
                          "--out", str(tmp_path / "along.png"), "--table", str(tmp_path / "t.csv")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "along.png").stat().st_size > 10_000
    table = pd.read_csv(tmp_path / "t.csv")
    for cell in report["cells"]:
        point = cell["point"]
        row = table[(table["entry"] == cell["entry"]) & (table["config.lr"] == point["lr"])
                    & ((table["config.params.p"] == point["p"]) if "p" in point
                       else table["config.params.p"].isna())]
        assert len(row) == 1 and row["mean"].iloc[0] == pytest.approx(cell["mean"])
        assert row["n"].iloc[0] == cell["n"] == 2


@needs_sandbox
@pytest.mark.slow
def test_eval_trains_the_layer_with_its_parameters(tmp_path):
    args = ["eval", str(ROOT / "submissions/dropout_only.py"), "--arch", "mlp3x100", "--dataset",
            "breast_cancer", "--epochs", "1", "--results", str(tmp_path), "--json"]
    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "harness", *args, *extra], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # the record alone

    a, b = run("--param", "p=0.5"), run()
    assert a["config"]["params"] == {"p": 0.5} and b["config"]["params"] == {}
    assert a["final_acc"] != b["final_acc"] or a["epochs"][0]["train_loss"] != b["epochs"][0]["train_loss"]
    sandboxed = run("--param", "p=0.5", "--untrusted")  # the sandboxed worker builds it the same
    assert sandboxed["isolation"]["sandboxed"] and sandboxed["config"]["params"] == {"p": 0.5}
    assert sandboxed["final_acc"] == a["final_acc"] and sandboxed["best_acc"] == a["best_acc"]
    runs = results.load(tmp_path)
    assert runs["key"].str.endswith('params={"p": 0.5}').sum() == 2

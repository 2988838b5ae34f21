"""Studies: the file format, running through the store, the report and its statistics."""

import json
import re

import pytest
from click.testing import CliRunner

from harness.cli import EXIT_USAGE, main
from harness.engine.runner import run_eval
from harness.errors import SuiteError
from harness.execution.sweep import run_study
from harness.leaderboard.stats import runs_frame
from harness.leaderboard.study_report import StudyCell, build_report, compare_with_reference, summary_lines
from harness.protocol.studies import load_study
from harness.store.plan import plan_study, study_records
from harness.store.results import ResultsStore

from conftest import ROOT
from inprocess import InProcess
from records import make_record

STUDIES = ROOT / "studies"

MINIMAL = """
name = "mini"
seeds = [0, 1]
{extra}
[[entries]]
name = "BN"
source = "batch_norm"

[[entries]]
name = "mine"
source = "{source}"

[[settings]]
arch = "resnet20"
dataset = "digits"
"""


def write_study(tmp_path, extra="", source="layer.py", name="study.toml"):
    (tmp_path / "layer.py").write_text((ROOT / "custom_norm.py").read_text())
    path = tmp_path / name
    path.write_text(MINIMAL.format(extra=extra, source=source))
    return path


def test_a_study_file_parses_with_paths_relative_to_it(tmp_path):
    study = load_study(write_study(tmp_path, extra='reference = "mine"\n[recipe]\noptimizer = "adam"\nlr = 0.001'))
    assert [e.name for e in study.entries] == ["BN", "mine"]
    assert study.entries[0].path.name == "batch_norm.py" and study.entries[1].path == tmp_path / "layer.py"
    assert study.reference == "mine" and study.recipe.optimizer == "adam"
    assert study.as_suite().recipe_id() != load_study(write_study(tmp_path, name="b.toml")).as_suite().recipe_id()
    assert load_study(write_study(tmp_path, name="c.toml")).reference == "BN"  # the first, by default


@pytest.mark.parametrize("extra, source, message", [
    ("colour = 1", "layer.py", "unknown field"),
    ('reference = "nobody"', "layer.py", "reference 'nobody' is not one of the entries"),
    ("", "missing.py", "entry 'mine'"),
    ('[recipe]\noptimizer = "lbfgs"', "layer.py", "optimizer must be one of"),
    ('[recipe]\nwarmup = 3', "layer.py", "unknown recipe field"),
    ("limit_train = -3", "layer.py", "limit_train must be a positive integer"),
])
def test_bad_study_files_say_what_is_wrong(tmp_path, extra, source, message):
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_study(write_study(tmp_path, extra=extra, source=source))


def test_hidden_visibility_and_duplicates_are_refused(tmp_path):
    path = write_study(tmp_path)
    text = path.read_text()
    path.write_text(text.replace('dataset = "digits"', 'dataset = "digits"\nvisibility = "hidden"'))
    with pytest.raises(SuiteError, match="no hidden settings"):
        load_study(path)
    path.write_text(text.replace('name = "mine"', 'name = "BN"'))
    with pytest.raises(SuiteError, match="same name"):
        load_study(path)
    path.write_text(text.replace('source = "layer.py"', 'source = "batch_norm"'))
    with pytest.raises(SuiteError, match="'BN' and 'mine' are the same file"):
        load_study(path)
    with pytest.raises(SuiteError, match="no such study file"):
        load_study(tmp_path / "absent.toml")


def test_the_shipped_studies_parse():
    full = load_study(STUDIES / "selective_norm.toml")
    assert [e.name for e in full.entries] == ["no norm", "dropout only", "norm only",
                                               "dropout then norm", "SelectiveNorm"]
    assert {s.key for s in full.settings} == {"resnet20-cifar10", "resnet20-cifar100",
                                              "resnet56-cifar10", "resnet56-cifar100"}
    assert full.recipe.deviations() == []  # the protocol's recipe
    smoke = load_study(STUDIES / "smoke.toml")
    assert [e.path for e in smoke.entries] == [e.path for e in full.entries]
    assert {s.dataset for s in smoke.settings} == {"digits"}
    placement = load_study(STUDIES / "placement.toml")
    assert placement.recipe.optimizer == "adam" and placement.recipe.early_stopping_patience == 3
    assert placement.recipe.epochs == 12 and not placement.recipe.augment
    assert {s.dataset for s in placement.settings} == {"fmnist"}


def _cell(entry, values, reach):
    c = StudyCell(entry, "s", len(values), [{"status": "ok"} for _ in values])
    c.values, c.reach95, c.mean = values, reach, sum(values) / len(values)
    return c


def test_significance_against_the_reference_is_holm_adjusted():
    class FakeStudy:
        reference = "ref"
        axes = ()
        settings = [type("S", (), {"key": "s"})()]
        entries = [type("E", (), {"name": n})() for n in ("ref", "better", "same")]

    cells = {("ref", "s", ()): _cell("ref", [70.0, 70.1, 69.9], [5, 5, 5]),
             ("better", "s", ()): _cell("better", [75.0, 75.2, 74.8], [5, 6, 5]),
             ("same", "s", ()): _cell("same", [70.0, 70.2, 69.8], [9, 9, 10])}
    compare_with_reference(FakeStudy, cells)
    better, same = cells[("better", "s", ())].versus, cells[("same", "s", ())].versus
    assert better["significant"] and better["difference"] == pytest.approx(5.0)
    assert better["p_holm"] == pytest.approx(min(1.0, 2 * better["p_value"]))  # smallest of 2
    assert not same["significant"] and same["p_value"] > 0.5
    assert cells[("same", "s", ())].versus_reach["significant"]  # 9.3 vs 5 epochs: slower
    assert cells[("ref", "s", ())].versus is None
    lines = summary_lines(FakeStudy, cells)
    assert any(line.startswith("better on s: best test accuracy higher than ref (+5.00 points")
               for line in lines)
    assert any(line.startswith("same on s: epochs to reach 95% of the best slower than ref")
               for line in lines)
    assert not any(line.startswith("same on s: best test accuracy") for line in lines)


def test_study_records_stay_off_the_leaderboard(tmp_path):
    store = ResultsStore(tmp_path)
    suite_run = make_record("BN", "a" * 64, "resnet20-digits", 0, 80.0)
    study_run = {**make_record("BN", "a" * 64, "resnet20-digits", 0, 20.0),
                 "study": {"name": "x", "version": 1, "file": "x.toml", "entry": "BN"}}
    store.add(suite_run)
    store.add(study_run)
    frame = runs_frame(store.records(), {"BN": "a" * 64})
    assert frame["run_id"].tolist() == [suite_run["run_id"]]


def test_the_cli_checks_the_study_before_running(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["study", "run", str(tmp_path / "nope.toml"), "--results", str(tmp_path)])
    assert bad.exit_code == EXIT_USAGE and "no such study file" in bad.output
    path = write_study(tmp_path)
    only = runner.invoke(main, ["study", "run", str(path), "--only", "nobody", "--results", str(tmp_path)])
    assert only.exit_code == EXIT_USAGE and "no entry named 'nobody'" in only.output
    dry = runner.invoke(main, ["study", "run", str(path), "--dry-run", "--no-estimate",
                               "--results", str(tmp_path)])
    assert dry.exit_code == 0 and "4 run(s) to do of 4" in dry.output
    assert "projected" not in dry.output  # the cost is measured only when asked for
    empty = runner.invoke(main, ["study", "report", str(path), "--results", str(tmp_path),
                                 "--out", str(tmp_path / "r")])
    assert empty.exit_code == 1 and "harness study run" in empty.output
    hidden = path.read_text().replace('arch = "resnet20"', 'arch = "resnet56"')
    path.write_text(hidden)  # resnet56-digits is hidden in the smoke suite
    refused = runner.invoke(main, ["study", "run", str(path), "--results", str(tmp_path)])
    assert refused.exit_code == EXIT_USAGE and "hidden" in refused.output


@pytest.mark.slow
def test_a_study_runs_in_workers_and_resumes_from_the_store(tmp_path):
    path = write_study(tmp_path, extra="limit_train = 64\nlimit_test = 64\n[recipe]\nepochs = 1\nbatch_size = 32")
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    runner = CliRunner()
    args = ["study", "run", str(path), "--results", str(tmp_path / "res"), "--only", "mine"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "1 run(s), 0 already done, 0 failed" in first.output
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "0 run(s), 1 already done" in again.output
    record = next(ResultsStore(tmp_path / "res").records())
    assert record["study"]["entry"] == "mine" and record["study"]["name"] == "mini"
    assert record["probes"] and record["inference"] and record["suite"]["name"] == "study:mini"
    assert not (tmp_path / "res" / "entries").exists() or not list((tmp_path / "res" / "entries").iterdir())


@pytest.mark.slow
def test_the_smoke_study_runs_on_cpu_and_its_report_builds(tmp_path):
    study = load_study(STUDIES / "smoke.toml")
    store = ResultsStore(tmp_path / "results")
    results = run_study(study, store, executor=InProcess(run_eval))
    assert len(results) == 5 and all(r.ran and not r.failed for r in results)
    assert all(run.done for run in plan_study(study, store))  # the store now has every run
    found = study_records(study, store)
    assert {k for k, v in found.items() if len(v) == len(study.seeds)} == \
        {(e.name, "resnet20-digits", ()) for e in study.entries}
    index = build_report(study, store.root, tmp_path / "report")
    html = index.read_text()
    for entry in study.entries:
        assert entry.name in html
    figures = re.findall(r'src="data:image/svg\+xml;base64,', html)
    assert len(figures) == 4  # curves, intervals, gradient flow, activations
    assert "<script" not in html
    data = json.loads((tmp_path / "report" / "study.json").read_text())
    assert len(data["cells"]) == 5 and data["summary"]
    ref = next(c for c in data["cells"] if c["entry"] == "norm only")
    assert ref["n"] == 2 and ref["mean"] is not None and ref["latency_ms"] > 0
    assert set(ref["reach"]) == {"90%", "95%", "99%"}
    assert any("norm only" in line for line in data["summary"])

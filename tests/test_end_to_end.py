"""The smoke suite for real: a baseline and a submission trained on digits, then the site."""

import json

import pytest
from click.testing import CliRunner

from conftest import ROOT
from harness.cli import main


@pytest.mark.slow
def test_smoke_suite_to_leaderboard(tmp_path):
    runner = CliRunner()
    results, site = tmp_path / "results", tmp_path / "site"
    base = runner.invoke(main, ["baselines", "run", "--suite", "smoke", "--only", "batch_norm",
                                "--jobs", "2", "--results", str(results)])
    assert base.exit_code == 0, base.output
    sub = runner.invoke(main, ["submit", str(ROOT / "submissions" / "selective_norm.py"), "--name",
                               "SelectiveNorm", "--suite", "smoke", "--jobs", "2", "--results", str(results)])
    assert sub.exit_code == 0, sub.output
    assert "SelectiveNorm: 2 run(s), 0 skipped" in sub.output
    again = runner.invoke(main, ["submit", str(ROOT / "submissions" / "selective_norm.py"), "--name",
                                 "SelectiveNorm", "--suite", "smoke", "--results", str(results)])
    assert again.exit_code == 0 and "0 run(s), 2 skipped (already done)" in again.output
    built = runner.invoke(main, ["leaderboard", "build", "--results", str(results), "--out", str(site)])
    assert built.exit_code == 0, built.output

    rows = {r["entry"]: r for r in json.loads((site / "leaderboard.json").read_text())["rows"]}
    assert set(rows) == {"batch_norm", "SelectiveNorm"}
    assert rows["batch_norm"]["resnet20-digits_n"] == 2 and rows["batch_norm"]["kind"] == "baseline"
    assert rows["batch_norm"]["resnet56-digits_mean"] == "hidden"  # final, but not revealed
    assert rows["SelectiveNorm"]["resnet56-digits_mean"] == "not-run"  # not a final submission
    assert rows["batch_norm"]["resnet20-digits_mean"] > 30.0  # it learns, even in 4 short epochs
    records = list((results / "runs").glob("*.json"))
    assert len(records) == 4 + 2
    index = (site / "index.html").read_text()
    assert "SelectiveNorm" in index and 'class="chip batch-dependent"' not in index

"""harness.results.board: the leaderboard's own table as a DataFrame; and the run frame's order."""

from __future__ import annotations

import json

import pytest

from harness import results
from harness.leaderboard.site import build_site
from harness.store.results import ResultsStore

from records import make_record, register


def populate(root):
    store = ResultsStore(root)
    for name, kind, scores in (("batch_norm", "baseline", [80.0, 80.5, 79.5]),
                               ("mine", "submission", [60.0, 60.4, 59.8]),
                               ("group_norm", "baseline", [79.0, 81.0, 80.2])):
        sha = register(store, root.parent, name, kind, "demo")
        for seed, acc in enumerate(scores):
            store.add(make_record(name, sha, "resnet20-digits", seed, acc, kind=kind, suite="demo"))
    return store


def test_board_is_the_sites_table(tmp_path):
    populate(tmp_path / "results")
    frame = results.board(tmp_path / "results")
    assert list(frame.columns[:7]) == ["suite", "entry", "kind", "setting", "rank", "group", "n"]
    assert len(frame) == 3 and set(frame["setting"]) == {"resnet20-digits"}
    by = frame.set_index("entry")
    assert by.loc["batch_norm", "mean"] == pytest.approx(80.0) and by.loc["batch_norm", "n"] == 3
    assert by.loc["mine", "rank"] == 3 and not set(by.loc["mine", "group"]) & set(by.loc["batch_norm", "group"])
    assert by.loc["batch_norm", "group"] == by.loc["group_norm", "group"] == "a"
    assert by.loc["mine", "ci_low"] < 60.0 < by.loc["mine", "ci_high"]
    site = build_site(tmp_path / "results", tmp_path / "site")
    exported = json.loads((site.index.parent / "leaderboard.json").read_text())["rows"]
    assert {r["entry"]: (r["rank"], r["group"]) for r in exported} == {
        e: (int(by.loc[e, "rank"]), by.loc[e, "group"]) for e in by.index}


def test_board_of_an_empty_folder_and_of_no_folder(tmp_path):
    ResultsStore(tmp_path / "r").runs_dir.mkdir(parents=True)
    assert results.board(tmp_path / "r").empty
    with pytest.raises(FileNotFoundError):
        results.board(tmp_path / "nothing")


def test_the_run_frame_shows_what_matters_at_both_ends(tmp_path):
    populate(tmp_path / "results")
    runs = results.load(tmp_path / "results")
    assert list(runs.columns[:4]) == ["entry", "best_acc", "status", "config.seed"]
    assert list(runs.columns[-2:]) == ["comparable", "wall_s"] and {"run_id", "key"} <= set(runs.columns)
    text = repr(runs)  # pandas shows the first and last columns of a wide frame that fit 80 columns
    assert all(c in text for c in ("entry", "best_acc", "status", "wall_s")), text

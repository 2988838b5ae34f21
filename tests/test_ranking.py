"""The board's ranking agrees with its own statistics: entries share a letter group exactly when
the page's Holm-adjusted pairwise test does not separate them (leaderboard.stats)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as hs

import leaderboard.stats as S

accuracies = hs.lists(hs.floats(0, 100, allow_nan=False).map(lambda v: round(v, 1)), min_size=0, max_size=5)
tables = hs.dictionaries(hs.sampled_from("ABCDEFGH"), accuracies, min_size=1, max_size=8)


def order_of(samples):
    means = {e: (sum(v) / len(v) if v else math.nan) for e, v in samples.items()}
    return sorted(samples, key=lambda e: (math.isnan(means[e]), -(means[e] if not math.isnan(means[e]) else 0), e))


@settings(max_examples=300, deadline=None)
@given(tables)
def test_letters_share_exactly_when_not_separated(samples):
    tests = S.pairwise(samples)
    apart = S.separated(tests)
    order = order_of(samples)
    groups = S.letter_groups(order, apart)
    assert set(groups) == set(samples) and all(groups.values())
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            share = bool(set(groups[a]) & set(groups[b]))
            assert share == (frozenset((a, b)) not in apart), (a, b, groups, tests[frozenset((a, b))])
    assert "a" in groups[order[0]]


@settings(max_examples=200, deadline=None)
@given(tables)
def test_adjusted_p_values_are_holms_and_never_below_the_raw_ones(samples):
    tests = S.pairwise(samples)
    for t in tests.values():
        if math.isnan(t["p"]):
            assert math.isnan(t["p_adjusted"])
        else:
            assert t["p"] <= t["p_adjusted"] <= 1.0


def test_the_demo_contradiction_cannot_happen():
    """The case the old board got wrong: four entries ranked 1 while the page said the last of them
    was significantly worse than the first. Now the two share no group."""
    samples = {"BIN": [85.0, 86.0, 86.1], "BN": [60.0, 80.0, 84.4], "SN": [50.0, 75.0, 84.4],
               "SelN": [54.0, 55.0, 58.1], "GN": [10.0, 30.0, 40.1]}
    tests = S.pairwise(samples)
    groups = S.letter_groups(order_of(samples), S.separated(tests))
    assert not set(groups["BIN"]) & set(groups["SelN"])
    assert tests[frozenset(("BIN", "SelN"))]["p_adjusted"] < S.ALPHA


def test_ordinal_ranks():
    assert S.ordinal_ranks({"a": 3.0, "b": 3.0, "c": 1.0, "d": math.nan}) == {"a": 1, "b": 1, "c": 3, "d": None}


def _board(tmp, scores: dict[str, list[float]]):
    """build_table over fabricated records of the one-setting demo suite (seeds 0, 1, 2)."""
    from harness.leaderboard.site import build_table
    from harness.protocol.suites import load_suite
    from harness.store.results import ResultsStore

    from records import make_record, register

    store = ResultsStore(tmp / "results")
    for i, (name, values) in enumerate(scores.items()):
        kind = "baseline" if i % 2 == 0 else "submission"
        sha = register(store, tmp, name, kind, "demo")
        for seed, acc in enumerate(values):
            store.add(make_record(name, sha, "resnet20-digits", seed, acc, kind=kind, suite="demo"))
    entries = store.entries()
    frame = S.runs_frame(list(store.records()), {e.name: e.sha256 for e in entries})
    return build_table(load_suite("demo"), entries, frame, reveal=False)


# Entries at a few levels with noise of a few points, so that some pairs separate and others not.
scores_of_one = hs.tuples(hs.sampled_from([30.0, 60.0, 62.0, 64.0, 90.0]),
                          hs.lists(hs.floats(-3, 3, allow_nan=False), min_size=1, max_size=3)).map(
    lambda t: [round(t[0] + e, 1) for e in t[1]])
boards = hs.dictionaries(hs.sampled_from(["bn", "gn", "sn", "bin", "mine", "yours"]), scores_of_one,
                         min_size=2, max_size=6)


@settings(max_examples=40, deadline=None)
@given(boards)
def test_the_board_never_contradicts_itself(tmp_path_factory, scores):
    table = _board(tmp_path_factory.mktemp("board"), scores)
    rows = {r.entry.name: r for r in table["rows"]}
    apart = {frozenset((d["better"], d["worse"])) for d in table["separations"]}
    for a in rows:
        for b in rows:
            if a < b:
                assert bool(set(rows[a].group) & set(rows[b].group)) == (frozenset((a, b)) not in apart)
    for d in table["separations"]:  # the better one has the higher mean and the lower rank
        assert rows[d["better"]].aggregate > rows[d["worse"]].aggregate
        assert rows[d["better"]].rank < rows[d["worse"]].rank
    for name, r in rows.items():  # the comparison with the best baseline says what the groups say
        for v in r.versus.values():
            shares = bool(set(r.group) & set(rows[v["baseline"]].group))
            assert v["significant"] == (not shares), (name, v, r.group, rows[v["baseline"]].group)

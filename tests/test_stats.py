"""Statistics on inputs with known answers."""

import math

import numpy as np
import pytest

from harness.leaderboard import stats as S

from records import make_record


def test_t_interval_known_values():
    low, high = S.t_interval([1.0, 2.0, 3.0], bounds=(-math.inf, math.inf))  # unclipped
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert low == pytest.approx(2 - half, abs=1e-5) and high == pytest.approx(2 + half, abs=1e-5)
    assert all(math.isnan(v) for v in S.t_interval([5.0]))
    assert S.t_interval([4.0, 4.0]) == (4.0, 4.0)


def test_probability_of_improvement_counts_pairs_and_half_ties():
    assert S.probability_of_improvement([3, 4, 5], [1, 2, 3]) == pytest.approx(8.5 / 9)
    assert S.probability_of_improvement([1, 2], [3, 4]) == 0.0
    assert S.probability_of_improvement([2, 2], [2, 2]) == 0.5


def test_welch_p_known_value():
    assert S.welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.021311, abs=1e-5)
    assert math.isnan(S.welch_p([1], [2, 3]))
    assert math.isnan(S.welch_p([80.0, 80.0], [70.0, 70.0]))  # no spread: no test, not "certain"
    assert math.isnan(S.probability_of_improvement([1.0], [2.0, 3.0]))


def test_groups_from_the_adjusted_pairwise_tests():
    samples = {"a": [70.0, 70.5, 69.5], "b": [69.0, 69.5, 68.6], "c": [60.0, 60.2, 59.9]}
    tests = S.pairwise(samples)
    assert S.letter_groups(["a", "b", "c"], S.separated(tests)) == {"a": "a", "b": "a", "c": "b"}


def test_mean_ranks_average_ties():
    frame = S.runs_frame([make_record(e, s * 64, "resnet20-digits", seed, acc)
                          for e, s, acc in (("a", "1", 80.0), ("b", "2", 80.0), ("c", "3", 70.0))
                          for seed in (0, 1)], {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64})
    table = S.cells(frame, 2)
    assert S.mean_ranks(["a", "b", "c"], ["resnet20-digits"], table) == {"a": 1.5, "b": 1.5, "c": 3.0}


def test_cells_flags_and_only_current_versions():
    records = [make_record("a", "1" * 64, "resnet20-digits", 0, 80.0),
               make_record("a", "1" * 64, "resnet20-digits", 1, 20.0, status="diverged"),
               make_record("a", "0" * 64, "resnet20-digits", 2, 99.0),  # an older file: ignored
               make_record("b", "2" * 64, "resnet20-digits", 0, 50.0, batch_dependent=True),
               make_record("b", "2" * 64, "resnet20-digits", 1, None, status="failed")]
    frame = S.runs_frame(records, {"a": "1" * 64, "b": "2" * 64})
    table = S.cells(frame, expected_seeds=2)
    a, b = table[("a", "resnet20-digits")], table[("b", "resnet20-digits")]
    assert a.n == 2 and a.mean == 50.0 and a.std == pytest.approx(np.std([80, 20], ddof=1))
    # The diverged run ended at 20% on 10 test images: within 3 standard errors of chance (10%).
    assert a.flags == ["diverged", "chance", "few-seeds"]
    assert b.n == 1 and set(b.flags) == {"failed", "incomplete", "few-seeds", "batch-dependent"}


def test_versus_best_baseline():
    recs = [make_record("base1", "1" * 64, "resnet20-digits", s, v, kind="baseline")
            for s, v in enumerate([60.0, 61.0, 62.0])]
    recs += [make_record("base2", "2" * 64, "resnet20-digits", s, v, kind="baseline")
             for s, v in enumerate([70.0, 71.0, 72.0])]
    recs += [make_record("sub", "3" * 64, "resnet20-digits", s, v) for s, v in enumerate([80.0, 81.0, 82.0])]
    frame = S.runs_frame(recs, {"base1": "1" * 64, "base2": "2" * 64, "sub": "3" * 64})
    out = S.versus_best_baseline({"base1": "baseline", "base2": "baseline", "sub": "submission"},
                                 ["resnet20-digits"], S.cells(frame, 3))
    v = out[("sub", "resnet20-digits")]
    assert v["baseline"] == "base2" and v["poi"] == 1.0 and v["significant"]
    assert v["difference"] == pytest.approx(10.0)
    assert ("base1", "resnet20-digits") not in out


def test_precisions_are_never_mixed_in_a_cell():
    fp32 = [make_record("a", "1" * 64, "resnet20-digits", s, 80.0) for s in (0, 1)]
    bf16 = [make_record("a", "1" * 64, "resnet20-digits", s, 10.0) for s in (0, 1)]
    only_bf16 = [make_record("b", "2" * 64, "resnet20-digits", s, 70.0) for s in (0, 1)]
    for r in bf16 + only_bf16:
        r["config"]["precision"] = "bf16"
    frame = S.runs_frame(fp32 + bf16 + only_bf16, {"a": "1" * 64, "b": "2" * 64})
    table = S.cells(frame, 2)
    assert table[("a", "resnet20-digits")].mean == 80.0 and "bf16" not in table[("a", "resnet20-digits")].flags
    assert table[("b", "resnet20-digits")].flags == ["few-seeds", "bf16"]


def test_chance_flag_from_the_record_or_computed_for_old_records():
    learnt = make_record("a", "1" * 64, "resnet20-digits", 0, 80.0)
    nothing = make_record("b", "2" * 64, "resnet20-digits", 0, 30.0)
    flagged = make_record("c", "3" * 64, "resnet20-digits", 0, 90.0)
    flagged["flags"] = ["chance"]  # what the run said about itself wins
    frame = S.runs_frame([learnt, nothing, flagged], {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64})
    assert frame.set_index("entry")["at_chance"].to_dict() == {"a": False, "b": True, "c": True}
    table = S.cells(frame, expected_seeds=1)
    assert "chance" not in table[("a", "resnet20-digits")].flags
    assert "chance" in table[("b", "resnet20-digits")].flags


def test_holm_adjustment_by_hand():
    from harness.leaderboard.stats import holm

    # Sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> kept monotone: 0.06.
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[4] == pytest.approx(0.02)
    assert math.isnan(adjusted[3])  # not a test, and not counted in m
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_intervals_stay_within_0_and_100_and_few_seeds_are_flagged():
    low, high = S.t_interval([88.2, 99.9])  # 2 seeds: mean 94.05 +- 12.7 x 5.85
    assert (low, high) == (pytest.approx(94.05 - 12.706 * 5.85, abs=0.1), 100.0)
    assert S.t_interval([2.0, 30.0])[0] == 0.0
    records = [make_record("a", "1" * 64, "resnet20-digits", seed, acc)
               for seed, acc in [(0, 88.2), (1, 99.9)]]
    records += [make_record("b", "2" * 64, "resnet20-digits", seed, 80.0 + seed) for seed in range(3)]
    table = S.cells(S.runs_frame(records, {"a": "1" * 64, "b": "2" * 64}), expected_seeds=2)
    assert "few-seeds" in table[("a", "resnet20-digits")].flags
    assert table[("a", "resnet20-digits")].ci_high == 100.0
    assert "few-seeds" not in table[("b", "resnet20-digits")].flags

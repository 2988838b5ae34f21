"""Training-dynamics metrics on synthetic curves with known answers."""

import math

import pytest

from harness.store.derived import curve_metrics, epochs_to_reach, generalisation_gap, late_std, loss_rises

NAN = float("nan")


def test_epochs_to_reach_fractions_of_the_best():
    acc = [10.0, 50.0, 89.0, 90.0, 95.0, 99.0, 100.0, 98.0]
    assert epochs_to_reach(acc) == {"90%": 4, "95%": 5, "99%": 6}
    assert epochs_to_reach([NAN, 40.0, NAN]) == {"90%": 2, "95%": 2, "99%": 2}
    assert epochs_to_reach([NAN, None]) == {"90%": None, "95%": None, "99%": None}
    assert epochs_to_reach([]) == {"90%": None, "95%": None, "99%": None}


def test_loss_rises_count_relative_jumps_only():
    # 1.0 -> 1.04 is under 5%; 1.04 -> 1.2 is over; 1.2 -> 0.9 falls; 0.9 -> NaN -> 2.0 not counted.
    assert loss_rises([1.0, 1.04, 1.2, 0.9, NAN, 2.0]) == 1
    assert loss_rises([1.0, 1.5, 2.25], threshold=0.49) == 2
    assert loss_rises([3.0]) == 0


def test_late_std_over_the_last_tenth_at_least_two():
    acc = list(range(1, 21))  # last 10% of 20 epochs: [19, 20]
    assert late_std(acc) == pytest.approx(math.sqrt(0.5))
    assert late_std([5.0, 7.0, 9.0], fraction=1.0) == pytest.approx(2.0)
    assert late_std([1.0, NAN]) is None and late_std([4.0]) is None


def test_generalisation_gap_is_final_train_minus_test():
    assert generalisation_gap([50.0, 99.5], [40.0, 91.0]) == pytest.approx(8.5)
    assert generalisation_gap([], []) is None and generalisation_gap([NAN], [1.0]) is None


def test_curve_metrics_from_record_epochs():
    epochs = [{"epoch": e, "train_acc": 10.0 * e, "test_acc": 9.0 * e, "test_loss": 2.0 / e}
              for e in range(1, 11)]
    m = curve_metrics(epochs)
    assert m["epochs_to_reach"] == {"90%": 9, "95%": 10, "99%": 10}
    assert m["loss_rises"] == 0 and m["generalisation_gap"] == pytest.approx(10.0)
    assert m["late_test_acc_std"] == pytest.approx(math.sqrt(((81 - 85.5) ** 2 + (90 - 85.5) ** 2) / 1))

"""Metrics against cases worked out by hand, including zeros, exact .5 roundings and clipping."""

import math
import warnings

import numpy as np
import pytest

from selfmm.metrics import _weighted_f1, compute_metrics, mean_std, mosi_metrics, sims_metrics

# index:        0     1    2    3     4     5
MOSI_PRED = [-0.5, 0.0, 1.5, 2.5, -2.2, 0.4]
MOSI_TRUE = [-1.0, 0.0, 2.5, 0.5, -3.0, -0.2]


def test_mosi_two_class_metrics():
    m = mosi_metrics(MOSI_PRED, MOSI_TRUE)
    # Has0 (>= 0): pred F T T T F T, true F T T T F F -> 5 of 6
    assert m["Has0_acc_2"] == pytest.approx(5 / 6)
    # weighted F1: positive class P 3/4 R 1 -> 6/7; negative class P 1 R 2/3 -> 4/5; supports 3 and 3
    assert m["Has0_F1_score"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    # Non0 drops index 1 (true 0): pred > 0: F T T F T, true > 0: F T T F F -> 4 of 5
    assert m["Non0_acc_2"] == pytest.approx(4 / 5)
    # positive class P 2/3 R 1 -> 4/5; negative class P 1 R 2/3 -> 4/5
    assert m["Non0_F1_score"] == pytest.approx(4 / 5)


def test_mosi_multiclass_accuracy_clips_then_rounds_half_to_even():
    m = mosi_metrics(MOSI_PRED, MOSI_TRUE)
    # Acc-7 ([-3, 3]): pred -0.5->-0, 0, 1.5->2, 2.5->2, -2.2->-2, 0.4->0
    #                  true -1, 0, 2.5->2, 0.5->0, -3, -0.2->-0       -> matches at 1, 2, 5
    assert m["Mult_acc_7"] == pytest.approx(3 / 6)
    # Acc-5 ([-2, 2]): pred -0, 0, 2, 2, -2, 0; true -1, 0, 2, 0, -2, -0 -> matches at 1, 2, 4, 5
    assert m["Mult_acc_5"] == pytest.approx(4 / 6)


def test_mosi_mae_and_corr_use_unclipped_values():
    m = mosi_metrics(MOSI_PRED, MOSI_TRUE)
    assert m["MAE"] == pytest.approx((0.5 + 0 + 1 + 2 + 0.8 + 0.6) / 6)
    far = mosi_metrics([5.0, -1.0], [3.0, -1.0])
    assert far["MAE"] == pytest.approx(1.0)  # |5 - 3| / 2: no clipping to [-3, 3]
    assert mosi_metrics([1.0, 3.0, 5.0], [0.0, 1.0, 2.0])["Corr"] == pytest.approx(1.0)
    assert mosi_metrics([1.0, 0.5, 0.0], [0.0, 1.0, 2.0])["Corr"] == pytest.approx(-1.0)


def test_mosi_zero_prediction_is_non_negative_for_has0_but_negative_for_non0():
    m = mosi_metrics([0.0, 0.0], [0.3, 0.0])
    assert m["Has0_acc_2"] == 1.0  # 0 >= 0 on both sides
    assert m["Non0_acc_2"] == 0.0  # only the 0.3 clip counts, and a 0 prediction is not > 0


# index:         0    1     2     3     4    5    6
SIMS_PRED = [-1.5, 0.0, 0.15, 0.5, 0.75, 1.2, 0.0]
SIMS_TRUE = [-0.8, -0.05, 0.1, 0.7, 0.71, 1.0, 0.3]


def test_sims_class_accuracies_use_left_open_bins_with_zero_negative():
    m = sims_metrics(SIMS_PRED, SIMS_TRUE)
    # 2 classes, 0 is negative: pred 0 0 1 1 1 1 0, true 0 0 1 1 1 1 1 -> 6 of 7
    assert m["Mult_acc_2"] == pytest.approx(6 / 7)
    # 3 classes (-0.1 / 0.1): pred 0 1 2 2 2 2 1, true 0 1 1 2 2 2 2 -> 5 of 7 (0.1 itself is neutral)
    assert m["Mult_acc_3"] == pytest.approx(5 / 7)
    # 5 classes (-0.7 / -0.1 / 0.1 / 0.7): pred 0 2 3 3 4 4 2, true 0 2 2 3 4 4 3 -> 5 of 7 (0.7 is class 3)
    assert m["Mult_acc_5"] == pytest.approx(5 / 7)
    # weighted F1 on the 2 classes: negative P 2/3 R 1 -> 4/5 (support 2); positive P 1 R 4/5 -> 8/9 (support 5)
    assert m["F1_score"] == pytest.approx((2 * 4 / 5 + 5 * 8 / 9) / 7)


def test_sims_mae_and_corr_use_values_clipped_to_plus_minus_one():
    m = sims_metrics(SIMS_PRED, SIMS_TRUE)
    # clipped pred -1 and 1 against -0.8 and 1.0
    assert m["MAE"] == pytest.approx((0.2 + 0.05 + 0.05 + 0.2 + 0.04 + 0.0 + 0.3) / 7)
    pred, true = [2.0, -2.0, 0.5], [1.0, -1.0, 0.5]
    assert sims_metrics(pred, true)["Corr"] == pytest.approx(1.0)
    assert sims_metrics(pred, true)["MAE"] == 0.0
    assert mosi_metrics(pred, true)["Corr"] < 0.999


def test_constant_predictions_give_nan_correlation_as_the_reference():
    assert math.isnan(sims_metrics([0.5, 0.5, 0.5], [0.1, -0.4, 0.9])["Corr"])


def test_family_dispatch_and_bad_input():
    assert compute_metrics("sims", SIMS_PRED, SIMS_TRUE) == sims_metrics(SIMS_PRED, SIMS_TRUE)
    with pytest.raises(ValueError, match="unknown metric family"):
        compute_metrics("iemocap", [0.0], [0.0])
    with pytest.raises(ValueError, match="equally many"):
        mosi_metrics([0.0, 1.0], [0.0])


def test_mean_and_population_std_over_seeds():
    mean, std = mean_std([{"MAE": 1.0, "Corr": 0.5}, {"MAE": 3.0, "Corr": 0.5}])
    assert mean == {"MAE": 2.0, "Corr": 0.5}
    assert std == {"MAE": 1.0, "Corr": 0.0}


def test_weighted_f1_gives_sklearns_bits():
    """The hand-written weighted F1 (scikit-learn is not imported by training, for its memory) is sklearn's
    ``f1_score(average="weighted")`` to the bit, on booleans as the metrics pass them, on integer and float
    classes, including classes only predicted or only true and a single class."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    cases = [(np.array([True, True]), np.array([False, False])), (np.array([1.0]), np.array([1.0]))]
    for trial in range(3000):
        size, k = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        if trial % 2:
            cases.append((rng.random(size) < rng.random(), rng.random(size) < rng.random()))
        else:
            cases.append((rng.integers(-3, 4, size).astype(np.float32), rng.integers(0, k, size).astype(np.float32)))
    with warnings.catch_warnings():  # sklearn warns of classes never predicted; its F1 is then 0, as ours
        warnings.simplefilter("ignore")
        for true, pred in cases:
            assert _weighted_f1(true, pred) == float(f1_score(true, pred, average="weighted")), (true, pred)
    assert math.isnan(_weighted_f1(np.array([], bool), np.array([], bool)))

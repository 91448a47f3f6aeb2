"""The report's ULGM diagnostics on labels worked out by hand (the whole report is run by tests/e2e)."""

import math

import numpy as np
import pytest

from selfmm.report import recovery_over_seeds, sign_agreement, unimodal_recovery

Y_M = [0.5, -0.5, 0.2, -0.2]


def _truth(y_t: list[float]) -> dict[str, dict[str, float]]:
    keys = [f"c{i}" for i in range(len(Y_M))]
    nan = [math.nan] * len(Y_M)
    labels = {"label": Y_M, "label_T": y_t, "label_A": nan, "label_V": nan}
    return {name: dict(zip(keys, values, strict=True)) for name, values in labels.items()}


def _generated(g_t: list[float]) -> dict[str, dict[str, float]]:
    return {f"c{i}": {"T": g, "A": 0.0, "V": 0.0} for i, g in enumerate(g_t)}


def test_sign_agreement_counts_clips_with_a_non_zero_truth():
    assert sign_agreement(np.array([0.3, -0.1, 0.0, 0.2]), np.array([1.0, 0.5, -1.0, 0.0])) == pytest.approx(1 / 3)


def test_offset_recovery_rewards_moving_towards_the_truth_not_copying_y_m():
    y_t = [0.9, -0.1, -0.6, 0.4]  # clips 2 and 3: the text opposes the multimodal label
    towards = unimodal_recovery(_truth(y_t), _generated([0.7, -0.3, -0.2, 0.1]))["T"]
    assert set(towards) == {"generated", "multimodal", "offset", "sign_agreement", "sign_agreement_multimodal"}
    assert towards["offset"] > 0.9  # offsets (0.2, 0.2, -0.4, 0.3) against the true (0.4, 0.4, -0.8, 0.6)
    assert towards["sign_agreement"] == 1.0
    assert towards["sign_agreement_multimodal"] == 0.5
    assert towards["multimodal"] == pytest.approx(np.corrcoef(Y_M, y_t)[0, 1])
    away = unimodal_recovery(_truth(y_t), _generated([0.3, -0.7, 0.6, -0.5]))["T"]
    assert away["offset"] < -0.9
    assert away["generated"] < towards["generated"]


def test_a_modality_without_true_labels_is_left_out():
    assert set(unimodal_recovery(_truth([0.9, -0.1, -0.6, 0.4]), _generated([0.0] * 4))) == {"T"}


def test_recovery_over_seeds_gives_means_with_population_std_siblings():
    per_seed = [{"T": {"offset": 0.2, "generated": 0.5}}, {"T": {"offset": 0.4, "generated": 0.7}}]
    assert recovery_over_seeds(per_seed) == {
        "T": pytest.approx({"offset": 0.3, "generated": 0.6, "offset_std": 0.1, "generated_std": 0.1})
    }

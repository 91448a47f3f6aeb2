"""ULGM against numbers worked out by hand on tiny tensors."""

import math

import pytest
import torch

from selfmm.config import LabelRule
from selfmm.ulgm import (
    ULGM,
    centre_position,
    class_centres,
    generated_label,
    momentum_update,
    relative_distance,
    scale_aware_label,
    standardised,
)

MEMORY = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0], [5.0, 6.0]])
LABELS = torch.tensor([1.0, -1.0, 0.0, 2.0])


def test_centres_are_means_over_the_memory_with_zero_counted_positive():
    pos, neg = class_centres(MEMORY, LABELS)
    assert pos.tolist() == pytest.approx([3.0, 8 / 3])  # rows 0, 2, 3 (label 0 is positive: >= 0)
    assert neg.tolist() == pytest.approx([0.0, 4.0])  # row 1


def test_exclude_zero_leaves_zero_labels_out_of_both_centres():
    pos, neg = class_centres(MEMORY, LABELS, exclude_zero=True)
    assert pos.tolist() == pytest.approx([3.0, 3.0])  # rows 0 and 3 only
    assert neg.tolist() == pytest.approx([0.0, 4.0])


def test_an_empty_class_has_a_zero_centre():
    pos, neg = class_centres(MEMORY, torch.ones(4))
    assert neg.tolist() == [0.0, 0.0]
    assert pos.tolist() == pytest.approx([2.25, 3.0])


def test_relative_distance_is_euclidean_and_relative_to_the_positive_distance():
    features = torch.tensor([[0.0, 0.0], [6.0, 8.0]])
    delta = relative_distance(features, pos=torch.tensor([3.0, 4.0]), neg=torch.tensor([6.0, 8.0]))
    # row 0: d_pos 5, d_neg 10 -> (10 - 5) / 5 = 1; row 1: d_pos 5, d_neg 0 -> (0 - 5) / 5 = -1
    assert delta.tolist() == pytest.approx([1.0, -1.0])


def test_label_formula_averages_ratio_and_difference_hypotheses():
    y_m, delta_s, delta_m = torch.tensor([0.5, -0.2]), torch.tensor([2.0, 0.5]), torch.tensor([1.0, 2.0])
    label = generated_label(y_m, delta_s, delta_m, H=3.0)
    # row 0: ratio 0.5 * 2 / 1 = 1, difference 0.5 + 2 - 1 = 1.5 -> 1.25
    # row 1: ratio -0.2 * 0.5 / 2 = -0.05, difference -0.2 + 0.5 - 2 = -1.7 -> -0.875
    assert label.tolist() == pytest.approx([1.25, -0.875])


def test_label_formula_clamps_to_plus_minus_H():
    y_m, delta_s, delta_m = torch.tensor([0.5, -0.5]), torch.tensor([2.0, -2.0]), torch.tensor([1.0, 1.0])
    # unclamped: 1.25 and 0.5 * (-0.5 * -2) + 0.5 * (-0.5 - 2 - 1) = 0.5 - 1.75 = -1.25
    assert generated_label(y_m, delta_s, delta_m, H=1.0).tolist() == [1.0, -1.0]


def test_momentum_over_three_epochs_matches_the_linearly_weighted_average():
    y_1, g_2, g_3 = torch.tensor(0.3), torch.tensor(0.9), torch.tensor(-0.6)
    y_2 = momentum_update(y_1, g_2, epoch=2)
    assert y_2.item() == pytest.approx(0.3 / 3 + 0.9 * 2 / 3)  # 1/3 old, 2/3 new
    y_3 = momentum_update(y_2, g_3, epoch=3)
    assert y_3.item() == pytest.approx(0.7 * 2 / 4 + (-0.6) * 2 / 4)
    # closed form at n = 3: weights 2k / (n (n + 1)) = 1/6, 2/6, 3/6 on the epoch-1..3 labels
    assert y_3.item() == pytest.approx(0.3 / 6 + 0.9 * 2 / 6 - 0.6 * 3 / 6)


def _features(rows: list[list[float]]) -> dict[str, torch.Tensor]:
    return {task: torch.tensor(rows) for task in "MTAV"}


def test_epoch_one_fills_memory_and_centres_but_keeps_every_label_at_y_m():
    ulgm = ULGM(torch.tensor([1.0, -1.0, 0.5]), {task: 2 for task in "MTAV"}, H=3.0)
    ulgm.step(torch.tensor([0, 1]), _features([[1.0, 1.0], [-1.0, 0.0]]), epoch=1)
    for task in "MTAV":
        assert ulgm.labels[task].tolist() == [1.0, -1.0, 0.5]
        assert ulgm.memory[task].tolist() == [[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]]
        pos, neg = ulgm.centres[task]
        assert pos.tolist() == pytest.approx([0.5, 0.5])  # rows 0 and 2 (2 not visited yet: zeros)
        assert neg.tolist() == pytest.approx([-1.0, 0.0])
    targets = ulgm.targets(torch.tensor([2, 0]))
    assert {task: t.tolist() for task, t in targets.items()} == {task: [0.5, 1.0] for task in "MTAV"}


def test_epoch_two_updates_unimodal_labels_from_the_previous_centres():
    ulgm = ULGM(torch.tensor([0.5, -1.0]), {task: 2 for task in "MTAV"}, H=3.0)
    ulgm.step(torch.tensor([0, 1]), _features([[3.0, 4.0], [6.0, 8.0]]), epoch=1)
    # centres now: pos (3, 4), neg (6, 8). Epoch 2, clip 0: fusion feature at the origin, text feature at
    # the negative centre, audio and video features at the origin.
    features = {
        "M": torch.tensor([[0.0, 0.0]]),
        "T": torch.tensor([[6.0, 8.0]]),
        "A": torch.tensor([[0.0, 0.0]]),
        "V": torch.tensor([[0.0, 0.0]]),
    }
    ulgm.step(torch.tensor([0]), features, epoch=2)
    # delta_M = delta_A = delta_V = 1 (see the distance test); delta_T = -1.
    # T: ratio 0.5 * -1 / 1 = -0.5, difference 0.5 - 1 - 1 = -1.5 -> -1; momentum 1/3 * 0.5 + 2/3 * -1 = -0.5
    # A, V: ratio 0.5, difference 0.5 -> 0.5; momentum keeps 0.5
    assert ulgm.labels["T"].tolist() == pytest.approx([-0.5, -1.0])
    assert ulgm.labels["A"].tolist() == pytest.approx([0.5, -1.0])
    assert ulgm.labels["M"].tolist() == [0.5, -1.0]
    # memory refreshed after the label update, and the text centres regrouped by the new labels:
    # both clips are now negative in T
    assert ulgm.memory["T"][0].tolist() == [6.0, 8.0]
    assert ulgm.centres["T"][1].tolist() == pytest.approx([6.0, 8.0])
    assert ulgm.centres["T"][0].tolist() == [0.0, 0.0]


def test_centre_position_is_plus_one_at_the_positive_centre_minus_one_at_the_negative_and_bounded():
    pos, neg = torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0])  # 5 apart
    features = torch.tensor([[3.0, 4.0], [6.0, 8.0], [4.5, 6.0], [0.0, 0.0], [300.0, 400.0]])
    position = centre_position(features, pos, neg)
    # the origin: d_pos 5, d_neg 10 -> 1; far beyond the negative centre: d_pos 495, d_neg 490 -> -1
    assert position.tolist() == pytest.approx([1.0, -1.0, 0.0, 1.0, -1.0])


def test_standardised_measures_in_standard_deviations_of_the_population():
    population = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sample std sqrt(2.5)
    assert standardised(torch.tensor([3.0, 5.0]), population).tolist() == pytest.approx([0.0, 2 / 2.5**0.5])


def test_scale_aware_label_adds_the_difference_of_positions_in_label_standard_deviations():
    y_m, z_s, z_m = torch.tensor([0.2, -0.5, 0.9]), torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.0, 0.5, 0.0])
    label = scale_aware_label(y_m, z_s, z_m, label_std=0.4, H=1.0)
    # 0.2 + 0.4 * 1; -0.5 + 0.4 * -1.5 = -1.1 and 0.9 + 0.4 * 2 = 1.7, both clamped to H
    assert label.tolist() == pytest.approx([0.6, -1.0, 1.0])


def _trained_labels(rule: LabelRule, scale: float) -> dict[str, torch.Tensor]:
    """Two epochs of ULGM on fixed random features, with the labels (and H) multiplied by ``scale``."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.rand(40, generator=generator) * 2 - 1
    features = {task: torch.randn(40, 3, generator=generator) + labels[:, None] for task in "MTAV"}
    ulgm = ULGM(labels * scale, {task: 3 for task in "MTAV"}, H=scale, rule=rule)
    for epoch in (1, 2):
        for batch in torch.arange(40).split(8):
            ulgm.step(batch, {task: f[batch] for task, f in features.items()}, epoch)
    return ulgm.labels


def test_scale_aware_labels_scale_with_the_labels_where_the_reference_formula_does_not():
    for task in "TAV":
        small, large = (
            _trained_labels(LabelRule.SCALE_AWARE, 1.0)[task],
            _trained_labels(LabelRule.SCALE_AWARE, 3.0)[task],
        )
        torch.testing.assert_close(large, 3 * small)
        faithful = _trained_labels(LabelRule.FAITHFUL, 1.0)[task], _trained_labels(LabelRule.FAITHFUL, 3.0)[task]
        assert not torch.allclose(faithful[1], 3 * faithful[0], atol=1e-3)


def test_every_rule_moves_the_unimodal_labels_and_never_the_fusion_label():
    for rule in LabelRule:
        labels = _trained_labels(rule, 1.0)
        assert not torch.equal(labels["T"], labels["M"])
        assert labels["M"].abs().max() <= 1.0


def test_mean_distances_cover_the_updated_rows_of_one_epoch_and_reset():
    ulgm = ULGM(torch.tensor([0.5, -1.0]), {task: 2 for task in "MTAV"}, H=3.0)
    ulgm.step(torch.tensor([0, 1]), _features([[3.0, 4.0], [6.0, 8.0]]), epoch=1)
    assert all(math.isnan(d) for d in ulgm.mean_distances().values())  # epoch 1 generates no labels
    ulgm.step(torch.tensor([0]), _features([[0.0, 0.0]]), epoch=2)  # |delta| = 1 (see the distance test)
    ulgm.step(torch.tensor([1]), _features([[6.0, 8.0]]), epoch=2)  # at the negative centre: |delta| = 1
    assert ulgm.mean_distances() == pytest.approx({task: 1.0 for task in "MTAV"})
    assert all(math.isnan(d) for d in ulgm.mean_distances().values())

"""The published Self-MM numbers: keyed like our metrics, the paper's and MMSA's values, printed beside ours."""

import numpy as np
import pytest

from selfmm.config import preset
from selfmm.metrics import compute_metrics
from selfmm.published import PUBLISHED, Source, compare_table, published


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_every_preset_dataset_has_both_sources_keyed_like_our_metrics(dataset):
    family = preset(dataset).metrics
    rng = np.random.default_rng(0)
    ours = compute_metrics(family, rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50))
    rows = published(dataset)
    assert [r.source for r in rows] == [Source.MMSA, Source.PAPER]
    assert list(rows[0].metrics) == list(ours)  # the MMSA table reports every metric we compute, in our order
    assert set(rows[1].metrics) < set(ours)
    for row in rows:
        assert all(0 < v < 1 for v in row.metrics.values())  # fractions, not percentages


def test_values_are_those_of_spec_section_7():
    mosi_mmsa, mosi_paper = PUBLISHED["mosi"]
    assert mosi_mmsa.metrics["Non0_acc_2"] == 0.8546 and mosi_mmsa.metrics["MAE"] == 0.7080
    assert mosi_paper.metrics["Non0_acc_2"] == 0.8598 and mosi_paper.metrics["MAE"] == 0.713
    assert PUBLISHED["mosei"][0].metrics["Mult_acc_7"] == 0.5387 and PUBLISHED["mosei"][1].metrics["Corr"] == 0.765
    assert PUBLISHED["sims"][0].metrics == {
        "Mult_acc_2": 0.8004,
        "Mult_acc_3": 0.6547,
        "Mult_acc_5": 0.4153,
        "F1_score": 0.8044,
        "MAE": 0.4250,
        "Corr": 0.5952,
    }
    assert "unverified" in PUBLISHED["sims"][1].note


def test_table_prints_ours_beside_the_published_numbers():
    ours = {
        "Has0_acc_2": 0.8123,
        "Has0_F1_score": 0.81,
        "Non0_acc_2": 0.83,
        "Non0_F1_score": 0.8299,
        "Mult_acc_5": 0.5,
        "Mult_acc_7": 0.4404,
        "MAE": 0.7512,
        "Corr": 0.7711,
    }
    table = compare_table("MOSI", ours, {"Has0_acc_2": 0.0123, "MAE": 0.004})
    lines = table.splitlines()
    assert lines[1].split() == ["metric", "ours", "mmsa", "paper"]
    row = {line.split()[0]: line.split()[1:] for line in lines[2:10]}
    assert row["Has0_acc_2"] == ["81.23", "±", "1.23", "83.44", "84.00"]
    assert row["MAE"] == ["0.7512", "±", "0.0040", "0.7080", "0.7130"]
    assert row["Mult_acc_7"] == ["44.04", "46.67", "–"]  # the paper reports no Acc-7
    assert "9a87fa0" in table and "argument-order" in table


def test_missing_ours_and_datasets_without_published_numbers():
    assert compare_table("sims", {}).splitlines()[2].split() == ["Mult_acc_2", "–", "80.04", "80.74"]
    demo = compare_table("demo", {"Mult_acc_2": 0.71, "MAE": 0.3}).splitlines()
    assert [line.split() for line in demo[1:4]] == [["metric", "ours"], ["Mult_acc_2", "71.00"], ["MAE", "0.3000"]]
    assert "no published Self-MM numbers for 'demo'" in demo[-1]
    with pytest.raises(ValueError, match="no published numbers for 'iemocap'"):
        published("iemocap")

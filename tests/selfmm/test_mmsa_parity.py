"""Parity with MMSA 2.2.1, the reference implementation, by running its own code next to ours (issue 11).

MMSA is a test-only dependency (requirements-test.lock, installed by setup.sh with --no-deps); these tests
skip, saying so, where it is not importable. Compared:

- ULGM and the loss: MMSA's SELF_MM *trainer* methods (init_labels, update_labels, update_features,
  update_centers, weighted_loss) against ``selfmm.ulgm.ULGM`` and ``selfmm.trainer.multitask_loss``, batch by
  batch over 3 epochs, called in the order of MMSA's ``do_train``: loss on the labels before the update, then
  (epoch > 1) update_labels with the previous batch's centres, update_features, update_centers.
- Metrics: MMSA's ``MetricsTop`` against ``selfmm.metrics.compute_metrics``, both families, boundary values.
- The network: MMSA's SELF_MM model, its random weights loaded into ``selfmm.model.SelfMM`` through
  ``tests.support.mmsa_reference.NAME_RULES``, same predictions and representations in eval and train mode.

Not matched, and why:

- MMSA's training loop itself (``do_train`` / ``MMSA_run``) is not run: ``MMSA_run`` calls
  ``torch.cuda.set_device``, which refuses a CPU device; its DataLoader shuffles with its own RNG stream; and a
  whole run would exercise the optimizer and the data loader, not the formulas. We drive the trainer's ULGM
  methods in do_train's order with our own shuffled batches instead.
- Dropout RNG: the network matches in train mode too, but only because both sides happen to draw their dropout
  masks in the same order from the global RNG (an implementation detail, noted at that test). The ULGM test
  feeds the same features to both sides instead of running the network, so its dropout does not enter.
- An empty class (no positive or no negative label): MMSA's centre is the mean of nothing, NaN, ours a zero
  vector (documented in ulgm.py); the data here always holds both signs.
- The loss is compared per batch (both take the batch mean of the weighted L1, MMSA per task); MMSA's epoch
  train loss, a mean of per-batch means, is logging only.
- Validation L1 (model selection) is not compared: MMSA averages per-batch means over a shuffled loader (the
  value then depends on which clips share the short last batch) and rounds it to 4 decimals before its
  early-stopping test; ours (selfmm.trainer.l1) is the unrounded mean over all clips, a documented deviation.
- Token type ids: MMSA passes ``text_bert``'s third row, we pass none (BERT's default, zeros); they agree for
  single-sentence input, which is all Self-MM feeds (the rows are zero), and which is used here.
- Metrics: MMSA rounds every value to 4 decimals (``round(x, 4)``). We return unrounded values, so the formulas
  are compared with MMSA's ``round`` shadowed by the identity, and the rounded outputs against ``round(ours,
  4)``. MMSA computes in its input's dtype (float32 in training), we in float64: MAE and Corr then agree to
  float32 round-off only. Class edges are compared in the inputs' precision on both sides: float32(0.1) lies
  above the float64 0.1, and binning it in float64 put SIMS labels 0.1 and -0.7 into the wrong Acc-3/Acc-5 bins
  (this test found that; selfmm.metrics was fixed).
- transformers 5.x: MMSA's BertTextEncoder (``BertTokenizer`` / ``BertModel.from_pretrained`` on a local
  folder) works unchanged; no workaround is needed.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import pytest
import torch
from torch.nn import Dropout
from torch.testing import assert_close

pytest.importorskip(
    "MMSA",
    reason="MMSA 2.2.1 (the reference implementation) is not installed: setup.sh installs requirements-test.lock",
)

from transformers import AutoConfig  # noqa: E402

from features.text_models import resolve_model  # noqa: E402
from features.types import TASKS  # noqa: E402
from selfmm.config import preset  # noqa: E402
from selfmm.data import Item, collate  # noqa: E402
from selfmm.metrics import compute_metrics  # noqa: E402
from selfmm.model import SelfMM  # noqa: E402
from selfmm.text_encoder import text_encoder_from_config  # noqa: E402
from selfmm.trainer import multitask_loss  # noqa: E402
from selfmm.ulgm import ULGM  # noqa: E402
from tests.support.mmsa_reference import (  # noqa: E402
    MMSA_TASKS,
    MMSANetwork,
    MMSATrainer,
    mmsa_network,
    mmsa_trainer,
    project_state_dict,
)

RTOL, ATOL = 1e-5, 1e-6  # float32 round-off: both sides compute in float32, in different summation orders

# --- ULGM and the loss ----------------------------------------------------------------------------------------

N, BATCH, EPOCHS = 44, 8, 3  # the last batch of each epoch is short (4), as a real loader's
DIMS = {"M": 12, "T": 6, "A": 4, "V": 5}


def _features(
    labels: torch.Tensor, directions: dict[str, torch.Tensor], g: torch.Generator, H: float
) -> dict[str, torch.Tensor]:
    """Post-ReLU representations that lean towards a per-task direction with the label, so clips sit
    meaningfully nearer one class centre (pure noise would put many fusion deltas near 0, where the ratio
    hypothesis amplifies round-off without bound)."""
    return {
        task: torch.relu(0.5 * torch.randn(len(labels), DIMS[task], generator=g) + (labels / H)[:, None] * d)
        for task, d in directions.items()
    }


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal to float32 round-off, naming what differs."""
    assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def _assert_same_state(mmsa: MMSATrainer, ulgm: ULGM, where: str) -> None:
    for task, name in MMSA_TASKS.items():
        _close(ulgm.labels[task], mmsa.label_map[name], f"{where}, {task} labels")
        for side, ours in zip(("pos", "neg"), ulgm.centres[task]):
            _close(ours, mmsa.center_map[name][side], f"{where}, {task} {side} centre")


@pytest.mark.parametrize("exclude_zero", [False, True], ids=["zero-is-positive", "exclude-zero"])
@pytest.mark.parametrize("H", [3.0, 1.0], ids=["H3-mosi", "H1-sims"])
def test_ulgm_labels_centres_and_loss_match_mmsa_trainer_after_every_batch(H: float, exclude_zero: bool):
    g = torch.Generator().manual_seed(11)
    labels = torch.randint(-5, 6, (N,), generator=g) * (H / 5)  # steps of H/5 in [-H, H] ...
    labels[:3] = 0.0  # ... with exact zeros, which exclude_zero leaves out of both centres
    directions = {task: torch.randn(DIMS[task], generator=g) for task in TASKS}
    mmsa = mmsa_trainer(N, DIMS, H, exclude_zero, "mosi" if H == 3.0 else "sims")
    ulgm = ULGM(labels, DIMS, H, exclude_zero)

    for index in torch.randperm(N, generator=g).split(BATCH):  # MMSA's label pass before epoch 1
        mmsa.init_labels(index, labels[index])
    _assert_same_state(mmsa, ulgm, "after init_labels")

    for epoch in range(1, EPOCHS + 1):
        for b, index in enumerate(torch.randperm(N, generator=g).split(BATCH)):
            where = f"epoch {epoch} batch {b}"
            features = _features(labels[index], directions, g, H)
            preds = {task: H * torch.randn(len(index), generator=g) for task in TASKS}
            expected = sum(
                mmsa.weighted_loss(preds[task].view(-1, 1), mmsa.label_map[name][index], indexes=index, mode=name)
                for task, name in MMSA_TASKS.items()
            )
            _close(multitask_loss(preds, ulgm.targets(index)), torch.as_tensor(expected), f"{where}, loss")

            f = {MMSA_TASKS[task]: features[task] for task in TASKS}
            if epoch > 1:
                mmsa.update_labels(f["fusion"], f["text"], f["audio"], f["vision"], epoch, index, None)
            mmsa.update_features(f["fusion"], f["text"], f["audio"], f["vision"], index)
            mmsa.update_centers()
            ulgm.step(index, features, epoch)
            _assert_same_state(mmsa, ulgm, where)

    for task in ("T", "A", "V"):  # the comparison was not vacuous: labels were generated, some clamped
        assert not torch.equal(ulgm.labels[task], labels)
    assert any((ulgm.labels[t].abs() == H).any() for t in ("T", "A", "V"))


# --- Metrics --------------------------------------------------------------------------------------------------

MMSA_DATASET = {"mosi": "MOSI", "sims": "SIMS"}
# Labels and predictions exactly on the edges: 0 (Has0 vs Non0, SIMS Acc-2), k + 0.5 (np.round half to even for
# Acc-5/Acc-7), the clip limits and beyond; SIMS' Acc-3/Acc-5 bin edges, its clip limits and beyond.
EDGES = {
    "mosi": [0.0, 0.0, 0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 2.0, -2.0, 3.0, -3.0, 3.5, -4.2, 2.2, -2.7],
    "sims": [0.0, 0.0, 0.1, -0.1, 0.7, -0.7, 1.0, -1.0, 1.3, -1.6, 0.05, -0.05, 1.005, -1.01],
}
SCALE = {"mosi": 3.0, "sims": 1.0}
STEPS = {"mosi": 3, "sims": 5}  # label grid per unit


def _metric_data(family: str, dtype: type[np.floating], edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded labels on the dataset's grid (MOSI averages of 7-point ratings: thirds; SIMS: fifths) and noisy
    predictions, plus every edge value both as a label (paired with a random prediction) and as a prediction."""
    rng = np.random.default_rng(5)
    scale, steps = SCALE[family], STEPS[family]
    grid = np.round(rng.uniform(-scale, scale, 120) * steps) / steps
    pred = grid + rng.normal(0.0, 0.4 * scale, grid.size)
    edge = np.array(edges)
    true = np.concatenate([grid, edge, rng.uniform(-scale, scale, edge.size), edge])
    pred = np.concatenate([pred, rng.uniform(-scale, scale, edge.size), edge, edge[::-1]])
    return pred.astype(dtype), true.astype(dtype)


def _mmsa_metrics(family: str, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MMSA's metric function on copies of our arrays: its ``.cpu().numpy()`` on a CPU tensor is a view, so a
    write there (there is none today) would otherwise change what ours then reads."""
    metrics = importlib.import_module("MMSA.utils.metricsTop").MetricsTop("regression").getMetics(MMSA_DATASET[family])
    return metrics(torch.tensor(pred), torch.tensor(true))


@pytest.fixture
def mmsa_unrounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """MMSA's metric code with its ``round(x, 4)`` calls made the identity (a module global shadowing the
    builtin), so its formulas can be compared with ours to the last bit."""
    monkeypatch.setattr(importlib.import_module("MMSA.utils.metricsTop"), "round", lambda x, _digits: x, raising=False)


@pytest.mark.parametrize("family", ["mosi", "sims"])
def test_metrics_match_mmsa_unrounded_on_float64(family: str, mmsa_unrounded: None):
    pred, true = _metric_data(family, np.float64, EDGES[family])
    expected = _mmsa_metrics(family, pred, true)
    ours = compute_metrics(family, pred, true)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(float(value), rel=0, abs=1e-12), key


@pytest.mark.parametrize("family", ["mosi", "sims"])
def test_metrics_match_mmsa_rounded_to_its_four_decimals(family: str):
    pred, true = _metric_data(family, np.float64, EDGES[family])
    expected = _mmsa_metrics(family, pred, true)
    assert {key: round(value, 4) for key, value in compute_metrics(family, pred, true).items()} == expected


# Edges that float32 represents on the same side as float64 (not the decimal SIMS edges 0.1 and -0.7).
FLOAT32_SAFE_EDGES = {
    "mosi": EDGES["mosi"],
    "sims": [0.0, 0.0, 1.0, -1.0, 1.3, -1.6, 0.05, -0.05, -0.1, 0.7],
}


@pytest.mark.parametrize("family", ["mosi", "sims"])
def test_metrics_of_float32_outputs_match_mmsa_to_float32_round_off(family: str, mmsa_unrounded: None):
    """Training hands both sides float32 predictions and labels; MMSA then computes in float32, we in float64."""
    pred, true = _metric_data(family, np.float32, FLOAT32_SAFE_EDGES[family])
    expected = _mmsa_metrics(family, pred, true)
    ours = compute_metrics(family, pred, true)
    for key, value in expected.items():
        tolerance = 1e-6 if key in ("MAE", "Corr") else 1e-12
        assert ours[key] == pytest.approx(float(value), rel=tolerance, abs=1e-12), key


def test_sims_bins_of_float32_decimal_edge_labels_match_mmsa(mmsa_unrounded: None):
    true = np.array([0.1, -0.7, 0.1, -0.7], dtype=np.float32)
    pred = np.array([0.05, -0.8, 0.05, -0.8], dtype=np.float32)  # the same bins as the labels, by any reading
    expected = _mmsa_metrics("sims", pred, true)
    ours = compute_metrics("sims", pred, true)
    assert (ours["Mult_acc_3"], ours["Mult_acc_5"]) == (expected["Mult_acc_3"], expected["Mult_acc_5"]) == (1.0, 1.0)


# --- The network ----------------------------------------------------------------------------------------------

AUDIO_DIM, VISION_DIM = 5, 7
# Where the two networks run: the CPU unless SELFMM_TEST_DEVICE names another (benchmarks/gpu_check.sh: cuda).
DEVICE = torch.device(os.environ.get("SELFMM_TEST_DEVICE", "cpu"))
MMSA_FEATURES = {"M": "Feature_f", "T": "Feature_t", "A": "Feature_a", "V": "Feature_v"}
DROPOUT_SEED = 7


@pytest.fixture(scope="module")
def networks() -> tuple[MMSANetwork, SelfMM]:
    """MMSA's network with its random initial weights (and the MiniLM's pretrained ones), and ours holding
    the same tensors. The demo preset's widths, with every dropout non-zero so that train mode tests them."""
    config = preset(
        "demo", lstm_dropout=0.2, post_fusion_dropout=0.2, post_vision_dropout=0.2, standardise_features=False
    )
    folder = resolve_model(config.text_model)
    width = AutoConfig.from_pretrained(folder).hidden_size
    torch.manual_seed(0)
    with warnings.catch_warnings():  # MMSA passes the dropout to its one-layer nn.LSTM too, which warns
        warnings.filterwarnings("ignore", "dropout option adds dropout after all but last recurrent layer")
        reference = mmsa_network(config, folder, width, AUDIO_DIM, VISION_DIM)
    ours = SelfMM(config.model, AUDIO_DIM, VISION_DIM, text_encoder_from_config(folder))
    weights = project_state_dict(reference)
    assert set(weights) == set(ours.state_dict())  # every tensor of ours, each from exactly one of MMSA's
    ours.load_state_dict(weights, strict=True)
    return reference.to(DEVICE), ours.to(DEVICE)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_network_with_mmsa_weights_gives_mmsa_predictions_and_features(
    networks: tuple[MMSANetwork, SelfMM], train: bool
):
    """On a padded batch of different true lengths. In train mode both also draw the same dropout masks from
    the same seed (audio, video, then the M, T, A, V heads': the same modules in the same order), which checks
    where each dropout sits and its rate; reordering our heads would fail it with the same maths. BERT's own
    dropout is off on both sides here: ours runs BERT on the packed real tokens and so draws its masks over other
    shapes (equal in distribution; tests/selfmm/test_model.py checks that)."""
    reference, ours = networks
    reference.train(train)
    ours.train(train)
    berts = (*reference.text_model.modules(), *ours.text_encoder.modules())
    bert_dropouts = [m for m in berts if isinstance(m, Dropout)]
    rates = [m.p for m in bert_dropouts]
    for m in bert_dropouts:
        m.p = 0.0
    tokenizer = reference.text_model.get_tokenizer()
    texts = ["a good film", "it is a really bad and boring movie, i did not like it", "fine"]
    g = torch.Generator().manual_seed(2)
    items = []
    for i, (text, t_a, t_v) in enumerate(zip(texts, (6, 1, 3), (2, 5, 4))):  # ragged tokens and frames
        ids = torch.tensor(tokenizer(text)["input_ids"])
        audio, vision = torch.randn(t_a, AUDIO_DIM, generator=g), torch.randn(t_v, VISION_DIM, generator=g)
        items.append(Item(i, ids, torch.ones_like(ids), audio, vision, 0.0))
    batch = collate(items).to(DEVICE)
    text = torch.stack([batch.input_ids, batch.attention_mask, torch.zeros_like(batch.input_ids)], dim=1).float()

    with torch.no_grad():
        torch.manual_seed(DROPOUT_SEED)
        expected = reference(text, (batch.audio, batch.audio_lengths), (batch.vision, batch.vision_lengths))
        torch.manual_seed(DROPOUT_SEED)
        out = ours(batch)
    for m, rate in zip(bert_dropouts, rates):
        m.p = rate
    for task in TASKS:
        _close(out.preds[task], expected[task].view(-1), f"{task} prediction")
        _close(out.features[task], expected[MMSA_FEATURES[task]], f"{task} feature")

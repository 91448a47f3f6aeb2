"""Training Self-MM on a feature store: one run per seed, early stopping on validation L1, test of the best
checkpoint, a model bundle, and the files the pipeline reports from (the paper's training procedure, as MMSA's
``SELF_MM`` trainer runs it).

Output folder (also the bundle, see bundle.py)::

    results.json                      per-seed test metrics, best epoch, validation loss; mean and std
    history/seed_<s>.csv              epoch, train_loss, valid_loss, delta_M/T/A/V (mean |delta| ULGM used)
    unimodal_labels/seed_<s>.csv      key, label, label_T, label_A, label_V: ULGM's labels after the best epoch,
                                      the one whose weights are kept and tested
    unimodal_labels/seed_<s>_epochs.csv  epoch, key, label_T, label_A, label_V: after every epoch
    manifest.json                     size and SHA-256 of every file above, written last (bundle.py)

The seconds per epoch go beside the folder (``<out>.timings.csv``): nothing in the bundle depends on the clock,
so under portable numerics the same inputs give the same bundle bytes on any machine.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from features.files import atomic_open, atomic_write_text
from features.store import FeatureStore
from features.text_models import resolve_model, vocabulary_of
from features.types import SPLITS, TASKS
from selfmm.bundle import HISTORY_COLUMNS, MANIFEST_FILE, load_weights, save_bundle, save_weights, write_manifest
from selfmm.config import LabelRule, TrainConfig
from selfmm.data import ClipDataset, DataError, feature_dims, fits_in_memory, frame_statistics, make_loader
from selfmm.metrics import compute_metrics, mean_std
from selfmm.model import SelfMM
from selfmm.model_card import card_for
from selfmm.numerics import Numerics, deterministic_kernels, pinned_threads
from selfmm.predict import autocast, resolve_device, run_model
from selfmm.text_encoder import load_text_config, load_text_encoder
from selfmm.ulgm import ULGM, UNIMODAL

log = logging.getLogger(__name__)

IMPROVEMENT = 1e-6  # an epoch improves when its validation loss is <= best - this (reference)


@dataclass
class SeedResult:
    seed: int
    best_epoch: int  # the epoch whose weights were kept and tested
    epochs: int  # epochs run before early stopping (or the cap)
    valid_loss: float  # validation L1 of the fused prediction at the best epoch
    test: dict[str, float]  # test metrics of the best epoch's weights
    history: list[dict[str, float]] = field(default_factory=list, repr=False)  # per epoch: losses, seconds
    epoch_labels: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)  # per epoch: task ->
    #                                   ULGM labels in train order, copied when the epoch ended

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """ULGM's labels after the best epoch: those the tested weights were trained with."""
        return self.epoch_labels[self.best_epoch - 1]


@dataclass
class TrainResult:
    out_dir: Path
    seeds: list[SeedResult]
    selected_seed: int  # lowest validation loss: the bundle's default model
    mean: dict[str, float]
    std: dict[str, float]


def train(features: str | Path, out_dir: str | Path, config: TrainConfig) -> TrainResult:
    """Train one model per seed on the store's train split, select on valid, test on test; write ``out_dir``."""
    out_dir = Path(out_dir)
    portable = config.numerics == Numerics.PORTABLE
    device = resolve_device("cpu" if portable else config.device)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # until the new one is written, the folder never verifies
    with (
        FeatureStore(features) as store,
        pinned_threads(config.numerics, config.threads),
        deterministic_kernels(config.deterministic),
    ):
        _check_text_model(store, config)
        dims = feature_dims(store)
        in_memory = fits_in_memory(store, config)
        data = {split: ClipDataset.from_store(store, split, dims, in_memory) for split in SPLITS}
        text_config = load_text_config(config.text_model)
        _check_vocabulary(data, text_config.vocab_size, store)
        train_items = (data["train"][i] for i in range(len(data["train"])))
        statistics = frame_statistics(train_items, dims) if config.standardise_features else None
        results = [train_seed(seed, data, dims, config, device, out_dir, statistics) for seed in config.seeds]
        mean, std = mean_std([r.test for r in results])
        card = card_for(store, config.text_model, mean)
        bundle = save_bundle(out_dir, config, store, dims, text_config, {r.seed: r.valid_loss for r in results}, card)
    out = TrainResult(out_dir, results, bundle.selected_seed, mean, std)
    _write_outputs(out, data["train"].keys, config)
    write_manifest(out_dir)
    return out


def train_seed(
    seed: int,
    data: dict[str, ClipDataset],
    dims: dict[str, int],
    config: TrainConfig,
    device: torch.device,
    out_dir: Path,
    statistics: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> SeedResult:
    """One seed from the pretrained BERT to the tested best checkpoint, whose weights go to the bundle in
    ``out_dir``. ``statistics``: the training frames' feature means and stds, where the config standardises
    features. Memory: the BERT is loaded afresh for each seed rather than copied from one held for all (a copy
    would keep two BERTs in memory: 180 MB for MiniLM, 880 MB for bert-base); the best epoch's weights are kept in
    the bundle's file, not beside the training copy (as MMSA keeps its checkpoint on disk); and Adam's moments and
    the gradients are let go before the test pass."""
    torch.manual_seed(seed)
    model = SelfMM(config.model, dims["audio"], dims["vision"], load_text_encoder(config.text_model))
    if statistics is not None:
        model.set_feature_statistics(statistics)
    model = model.to(device)
    optimizer = make_optimizer(model, config)
    loaders = {
        "train": make_loader(
            data["train"],
            config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            bucket=config.bucket_by_length,
            fixed_padding=config.fixed_padding,
        ),
        **{
            split: make_loader(data[split], config.batch_size, fixed_padding=config.fixed_padding)
            for split in ("valid", "test")
        },
    }
    labels = torch.from_numpy(data["train"].labels).to(device)
    ulgm = ULGM(labels, model.feature_dims(), config.H, config.exclude_zero, LabelRule(config.ulgm))
    best_loss, best_epoch, history, epoch_labels = math.inf, 0, [], []
    epoch = 0
    while True:
        epoch += 1
        start = time.perf_counter()
        train_loss = train_epoch(model, loaders["train"], ulgm, optimizer, epoch, config, device)
        seconds = time.perf_counter() - start  # train_epoch ends by reading its loss: the device is synced
        valid_loss = l1(run_model(model, loaders["valid"], device, config.amp)["M"], data["valid"].labels)
        distances = {f"delta_{task}": d for task, d in ulgm.mean_distances().items()}
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "train_seconds": seconds, **distances}
        )
        # copies: a CPU tensor's .numpy() is a view, which the next epoch's updates would overwrite
        epoch_labels.append({task: ulgm.labels[task].cpu().numpy().copy() for task in TASKS})
        log.info(
            "seed %d epoch %d: train loss %.4f, valid L1 %.4f, %.1f s", seed, epoch, train_loss, valid_loss, seconds
        )
        if not math.isfinite(valid_loss):
            raise FloatingPointError(
                f"seed {seed}, epoch {epoch}: validation loss is {valid_loss}; training "
                "diverged (try lower learning rates)"
            )
        if valid_loss <= best_loss - IMPROVEMENT:
            best_loss, best_epoch = valid_loss, epoch
            save_weights(out_dir, seed, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        if epoch - best_epoch >= config.early_stop or epoch == config.max_epochs:
            break
    del optimizer
    model.zero_grad(set_to_none=True)
    if best_epoch != epoch:  # the first epoch's finite loss is always saved
        model.load_state_dict(load_weights(out_dir, seed))
    preds = run_model(model, loaders["test"], device, config.amp)
    result = SeedResult(
        seed,
        best_epoch,
        epoch,
        best_loss,
        compute_metrics(config.metrics, preds["M"], data["test"].labels),
        history,
        epoch_labels,
    )
    log.info("seed %d: best epoch %d of %d, test %s", seed, best_epoch, epoch, result.test)
    return result


@torch.enable_grad()  # whatever a caller or a library (py-feat does) left switched off
def train_epoch(
    model: SelfMM,
    loader,
    ulgm: ULGM,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    config: TrainConfig,
    device: torch.device,
) -> float:
    """One pass over the training data; returns the mean total loss per batch.

    Gradients of ``update_epochs`` consecutive batches are summed before one step. As in the reference,
    the last ``len(loader) % update_epochs`` batches are back-propagated (and update ULGM) but never stepped,
    unless ``step_trailing_batches``; their gradients are cleared at the next epoch's first batch.
    """
    model.train()
    k = config.update_epochs
    total = torch.zeros((), device=device)
    for b, batch in enumerate(tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)):  # TTY only
        if b % k == 0:
            optimizer.zero_grad()
        batch = batch.to(device)
        with autocast(device, config.amp):
            out = model(batch)
        loss = multitask_loss({t: p.float() for t, p in out.preds.items()}, ulgm.targets(batch.index))
        loss.backward()
        ulgm.step(batch.index, out.features, epoch)
        if b % k == k - 1 or (config.step_trailing_batches and b == len(loader) - 1):
            optimizer.step()
        total += loss.detach()
    return float(total) / len(loader)


def multitask_loss(preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """L1 of the fused prediction against y_M, plus for T, A, V an L1 against the generated label weighted
    by tanh(|y_s - y_M|): a clip whose unimodal label agrees with the multimodal one teaches that head nothing
    (in epoch 1 every such weight is 0)."""
    y_m = targets["M"]
    loss = (preds["M"] - y_m).abs().mean()
    for task in UNIMODAL:
        weight = torch.tanh((targets[task] - y_m).abs())
        loss = loss + (weight * (preds[task] - targets[task]).abs()).mean()
    return loss


NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


def make_optimizer(model: SelfMM, config: TrainConfig) -> torch.optim.Adam:
    """Adam (L2 weight decay coupled into the gradient, not AdamW) over the reference's five groups.

    ``fused``: one kernel over all parameters instead of a dozen small ops per tensor. The same update up to float
    round-off (about 3e-8 on MiniLM's weights), and 11x faster on a CPU, where the per-tensor loop over BERT's
    200 tensors (half of them the 30522 x 384 word embeddings, all decayed every step) cost 0.37 s a step.
    """
    bert = list(model.text_encoder.named_parameters())
    return torch.optim.Adam(
        [
            {
                "params": [p for n, p in bert if not any(nd in n for nd in NO_DECAY)],
                "lr": config.learning_rate_bert,
                "weight_decay": config.weight_decay_bert,
            },
            {
                "params": [p for n, p in bert if any(nd in n for nd in NO_DECAY)],
                "lr": config.learning_rate_bert,
                "weight_decay": 0.0,
            },
            {
                "params": list(model.audio_model.parameters()),
                "lr": config.learning_rate_audio,
                "weight_decay": config.weight_decay_audio,
            },
            {
                "params": list(model.vision_model.parameters()),
                "lr": config.learning_rate_vision,
                "weight_decay": config.weight_decay_vision,
            },
            {
                "params": list(model.heads.parameters()),
                "lr": config.learning_rate_other,
                "weight_decay": config.weight_decay_other,
            },
        ],
        fused=True,
    )


def l1(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over all clips (the reference averages per-batch means instead)."""
    return float(np.mean(np.abs(pred.astype(np.float64) - true)))


def _check_text_model(store: FeatureStore, config: TrainConfig) -> None:
    """Token ids only mean something in the vocabulary that made them: the BERT's must be the store's. Compared by
    vocabulary, not by name (the MiniLM reads bert-base-uncased's ids); by name where a vocabulary is unknown."""
    text = store.provenance.get("text")
    made_with = text.config.get("model") if text else None
    if not made_with:
        return
    assert text is not None  # made_with comes from it
    theirs = text.identity.get("vocabulary") or vocabulary_of(made_with)
    ours = vocabulary_of(config.text_model)
    if theirs and ours:
        if theirs != ours:
            raise DataError(
                f"{store.path}: text was tokenised for {made_with!r}, whose vocabulary is not that of "
                f"text_model {config.text_model!r}; set text_model to a BERT with the same vocabulary "
                "or re-extract the text"
            )
    elif resolve_model(made_with) != resolve_model(config.text_model):
        raise DataError(
            f"{store.path}: text was tokenised for {made_with!r}, but text_model is "
            f"{config.text_model!r}; set text_model to {made_with!r} or re-extract the text"
        )


def _check_vocabulary(data: dict[str, ClipDataset], vocab_size: int, store: FeatureStore) -> None:
    for split, dataset in data.items():
        i = int(dataset.max_token_ids.argmax())
        if dataset.max_token_ids[i] >= vocab_size:
            raise DataError(
                f"{store.path}: clip {dataset.keys[i]!r} ({split}) has token id "
                f"{dataset.max_token_ids[i]}, beyond the text model's vocabulary of {vocab_size}"
            )


def _write_outputs(result: TrainResult, train_keys: list[str], config: TrainConfig) -> None:
    for sub in ("history", "unimodal_labels"):
        (result.out_dir / sub).mkdir(parents=True, exist_ok=True)
    for r in result.seeds:
        with atomic_open(result.out_dir / "history" / f"seed_{r.seed}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r.history)
        with atomic_open(result.out_dir / "unimodal_labels" / f"seed_{r.seed}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "label", "label_T", "label_A", "label_V"])
            for i, key in enumerate(train_keys):
                writer.writerow([key] + [float(r.labels[task][i]) for task in TASKS])
        with atomic_open(result.out_dir / "unimodal_labels" / f"seed_{r.seed}_epochs.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "key", "label_T", "label_A", "label_V"])
            for epoch, labels in enumerate(r.epoch_labels, start=1):
                for i, key in enumerate(train_keys):
                    writer.writerow([epoch, key] + [float(labels[task][i]) for task in UNIMODAL])
    summary = {
        "config": config.to_dict(),
        "metrics": config.metrics,
        "selected_seed": result.selected_seed,
        "seeds": [
            {"seed": r.seed, "best_epoch": r.best_epoch, "epochs": r.epochs, "valid_loss": r.valid_loss, "test": r.test}
            for r in result.seeds
        ],
        "mean": result.mean,
        "std": result.std,
    }
    atomic_write_text(result.out_dir / "results.json", json.dumps(summary, indent=2))
    # Timings differ from run to run: they stay out of the bundle, whose bytes DVC hashes.
    with atomic_open(timings_path(result.out_dir), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "epoch", "train_seconds"])
        writer.writerows([r.seed, h["epoch"], h["train_seconds"]] for r in result.seeds for h in r.history)


def timings_path(out_dir: Path) -> Path:
    """Seconds per epoch and seed, beside the bundle folder (``build/demo/model.timings.csv``), not in it."""
    return out_dir.parent / f"{out_dir.name}.timings.csv"

"""Running a trained Self-MM: predictions for stored or freshly extracted clips, and test-set evaluation."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from contextlib import nullcontext
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from features.errors import ConfigError
from features.store import FeatureStore
from features.types import TASKS, Clip
from selfmm.bundle import Bundle, load_bundle
from selfmm.data import ClipDataset, fits_in_memory, make_loader
from selfmm.metrics import compute_metrics, mean_std
from selfmm.model import SelfMM


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(name)


def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when asked for; nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def run_model(model: SelfMM, loader: DataLoader, device: torch.device, amp: bool = False) -> dict[str, np.ndarray]:
    """All four predictions for every clip of the loader's dataset, in dataset order (eval mode)."""
    model.eval()
    n = len(cast(Sized, loader.dataset))  # a map-style dataset (ClipDataset); torch's Dataset type has no __len__
    out = {task: np.zeros(n, np.float32) for task in TASKS}
    for batch in tqdm(loader, desc="predict", unit="batch", leave=False, disable=None):  # a bar on a TTY only
        with autocast(device, amp):
            preds = model(batch.to(device)).preds
        for task in TASKS:
            out[task][batch.index.numpy()] = preds[task].float().cpu().numpy()
    return out


def _loader(bundle: Bundle, dataset: ClipDataset) -> DataLoader:
    """Batched and padded as in training, so evaluation repeats training's test numbers exactly."""
    return make_loader(dataset, bundle.config.batch_size, fixed_padding=bundle.config.fixed_padding)


class Predictor:
    """One seed's network of a bundle, loaded once for many predictions (batch prediction, the model service).
    Calls may come from several threads at once: the network is only read."""

    def __init__(self, bundle: Bundle, seed: int | None = None, device: str = "cpu"):
        self.bundle = bundle
        self.device = resolve_device(device)
        self.model = bundle.model(seed).to(self.device)

    def run(self, dataset: ClipDataset) -> dict[str, dict[str, float]]:
        """Clip key -> fused score ``M`` and unimodal scores ``T``, ``A``, ``V``."""
        preds = run_model(self.model, _loader(self.bundle, dataset), self.device, self.bundle.config.amp)
        return {key: {task: float(preds[task][i]) for task in TASKS} for i, key in enumerate(dataset.keys)}

    def predict(self, clips: Sequence[Clip]) -> dict[str, dict[str, float]]:
        """The scores of freshly extracted clips (made with ``bundle.provenance``'s configs), keys unique."""
        return self.run(ClipDataset.from_clips(clips, self.bundle.dims))


def predict_clips(
    bundle: Bundle, clips: Sequence[Clip], seed: int | None = None, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Clip key -> fused score ``M`` and unimodal scores ``T``, ``A``, ``V``. For freshly extracted clips
    (made with ``bundle.provenance``'s configs and ``bundle.text_model_dir``'s tokenizer); labels may be NaN."""
    return Predictor(bundle, seed, device).predict(clips)


def predict_store(
    model_dir: str | Path, features: str | Path, split: str | None = None, seed: int | None = None, device: str = "auto"
) -> dict[str, dict[str, float]]:
    """Predictions for the stored clips (of one split, or all) by one seed's model (default: selected)."""
    with FeatureStore(features) as store:
        bundle = load_bundle(model_dir, store)
        dataset = ClipDataset.from_store(
            store, split, bundle.dims, fits_in_memory(store, bundle.config), require_labels=False
        )
        return Predictor(bundle, seed, device).run(dataset)


def evaluate(model_dir: str | Path, features: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Every seed's metrics on one split of a store, with mean and population std over seeds."""
    torch_device = resolve_device(device)
    with FeatureStore(features) as store:
        bundle = load_bundle(model_dir, store)
        dataset = ClipDataset.from_store(store, split, bundle.dims, fits_in_memory(store, bundle.config))
        loader = _loader(bundle, dataset)
        per_seed = {}
        for seed in bundle.seeds:
            preds = run_model(bundle.model(seed).to(torch_device), loader, torch_device, bundle.config.amp)
            per_seed[seed] = compute_metrics(bundle.config.metrics, preds["M"], dataset.labels)
    mean, std = mean_std(list(per_seed.values()))
    return {
        "split": split,
        "clips": len(dataset),
        "metrics": bundle.config.metrics,
        "selected_seed": bundle.selected_seed,
        "seeds": {str(s): m for s, m in per_seed.items()},
        "mean": mean,
        "std": std,
    }

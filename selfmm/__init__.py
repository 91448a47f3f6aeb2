"""The Self-MM model (Yu et al., AAAI 2021) and everything to train, evaluate and use it on a feature store.

``TrainConfig`` holds every hyper-parameter (presets per dataset), ``train`` fits one model per seed into a
bundle folder, ``load_bundle`` reads one back, ``evaluate`` scores it on a split of a store, and
``predict_clips`` / ``predict_store`` give the fused and unimodal sentiment of clips.

The names load on first use: ``selfmm.config`` and ``selfmm.numerics`` must be importable without torch, since
portable numerics are set before torch is first imported (selfmm/numerics.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfmm.bundle import load_bundle
    from selfmm.config import TrainConfig
    from selfmm.predict import evaluate, predict_clips, predict_store
    from selfmm.trainer import train

_HOMES = {
    "TrainConfig": "selfmm.config",
    "load_bundle": "selfmm.bundle",
    "evaluate": "selfmm.predict",
    "predict_clips": "selfmm.predict",
    "predict_store": "selfmm.predict",
    "train": "selfmm.trainer",
}
__all__ = ["TrainConfig", "evaluate", "load_bundle", "predict_clips", "predict_store", "train"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'selfmm' has no attribute {name!r}")

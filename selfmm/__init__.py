"""The Self-MM model (Yu et al., AAAI 2021) and everything to train, evaluate and use it on a feature store.

``TrainConfig`` holds every hyper-parameter (presets per dataset), ``train`` fits one model per seed into a
bundle folder, ``load_bundle`` reads one back, ``evaluate`` scores it on a split of a store, and
``predict_clips`` / ``predict_store`` give the fused and unimodal sentiment of clips.
"""
from selfmm.bundle import load_bundle
from selfmm.config import TrainConfig
from selfmm.predict import evaluate, predict_clips, predict_store
from selfmm.train import train

__all__ = ["TrainConfig", "evaluate", "load_bundle", "predict_clips", "predict_store", "train"]

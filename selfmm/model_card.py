"""What a model knows: the data it was trained on and how well it did, kept in its bundle (``bundle.json``
``card``) and shown by ``selfmm info``, ``GET /model``, the page and the report.

A model trained on the synthetic demo corpus scores real media with numbers that look like any other model's and
mean little; the card is how every place that shows a score can say so. The card lists the digests of the
synthetic corpus's media, so "this clip is not from its corpus" is an exact, deterministic check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from features.store import FeatureStore
from features.types import MMSA_EXTRACTOR

DEMO_DATASET = "demo"  # the name the built-in synthetic corpus (`selfmm demo-corpus`, data/demo) is extracted under
UNKNOWN = "unknown"


class TrainingData(StrEnum):
    """What the training features were made from."""

    SYNTHETIC = "synthetic demo corpus"  # espeak voices, warped photos, a phrase bank: shows the pipeline works
    MEDIA = "real media"  # a dataset's videos, extracted here
    RELEASED_FEATURES = "released features"  # an MMSA pickle imported with `selfmm import-mmsa`
    UNKNOWN = UNKNOWN  # a bundle made before cards


@dataclass(frozen=True)
class ModelCard:
    dataset: str = UNKNOWN
    training_data: TrainingData = TrainingData.UNKNOWN
    clips: dict[str, int] = field(default_factory=dict)  # per split
    label_range: list[float] = field(default_factory=list)  # [lowest, highest] training label
    text_model: str = UNKNOWN
    test_metrics: dict[str, float | None] = field(default_factory=dict)  # mean over seeds; None: undefined (NaN)
    corpus_media: list[str] = field(default_factory=list)  # SHA-256 of each synthetic corpus media file

    @property
    def caution(self) -> str:
        """The one line said when this model scores media from outside its corpus ("" when there is none)."""
        if self.training_data is not TrainingData.SYNTHETIC:
            return ""
        return (
            f"this model was trained on the synthetic {self.dataset} corpus; its scores on other media mean little "
            "(train on MOSI, MOSEI or SIMS for real videos: docs/datasets.md)"
        )

    def caution_for(self, media_sha256: Iterable[str]) -> str:
        """The caution when any of these media is not from the model's synthetic corpus, else "". Lazily: a model
        trained on real media has no caution, and its callers' hashes are then never computed."""
        if not self.caution:
            return ""
        corpus = set(self.corpus_media)
        return self.caution if any(sha not in corpus for sha in media_sha256) else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "training_data": self.training_data.value}

    def describe(self) -> dict[str, Any]:
        """The card as ``selfmm info --json``, ``GET /model`` and the page show it: the corpus digests counted."""
        shown = {k: v for k, v in self.to_dict().items() if k != "corpus_media"}
        return {**shown, "corpus_media_files": len(self.corpus_media), "caution": self.caution}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelCard:
        """The card of ``bundle.json``; a bundle written before cards gets one that says unknown."""
        if not values:
            return cls()
        return cls(**{**values, "training_data": TrainingData(values["training_data"])})

    def lines(self) -> list[str]:
        """The card for a person to read."""
        splits = ", ".join(f"{split} {n}" for split, n in self.clips.items()) or UNKNOWN
        labels = f"[{self.label_range[0]:g}, {self.label_range[1]:g}]" if self.label_range else UNKNOWN
        metrics = ", ".join(
            f"{name} {'undefined' if value is None else f'{value:.4f}'}" for name, value in self.test_metrics.items()
        )
        lines = [
            f"trained on: {self.dataset} ({self.training_data.value})",
            f"clips: {splits}; training labels in {labels}",
            f"text model: {self.text_model}",
            f"test metrics (mean over seeds): {metrics or UNKNOWN}",
        ]
        return lines + ([f"caution: {self.caution}"] if self.caution else [])


def training_data(store: FeatureStore) -> TrainingData:
    """Released features when the store was imported from an MMSA pickle, synthetic for the demo corpus, else
    real media."""
    if any(p.extractor == MMSA_EXTRACTOR for p in store.provenance.values()):
        return TrainingData.RELEASED_FEATURES
    return TrainingData.SYNTHETIC if store.dataset == DEMO_DATASET else TrainingData.MEDIA


def card_for(store: FeatureStore, text_model: str, test_metrics: dict[str, float]) -> ModelCard:
    """The card of a model trained on ``store``'s train split."""
    labels = list(store.read_labels("train").values())
    kind = training_data(store)
    media = store.read_attribute("media_sha256") if kind is TrainingData.SYNTHETIC else {}
    return ModelCard(
        dataset=store.dataset,
        training_data=kind,
        clips=store.split_counts(),
        label_range=[min(labels), max(labels)] if labels else [],
        text_model=text_model,
        test_metrics={name: None if math.isnan(value) else value for name, value in test_metrics.items()},
        corpus_media=sorted(set(map(str, media.values()))),
    )

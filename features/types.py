"""The value types every part of features/ shares: clips, sources, failures, splits and ids, with their checks.

A small module with no project imports but the error family, so the dataset readers, the extractors, the cache
and the store can all build on it without importing each other.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from features.errors import PipelineError

SPLITS = ("train", "valid", "test")
# The unimodal tasks and their labels (label_T, label_A, label_V), by the letters of the paper and MMSA, and the
# modality each reads; with M, the multimodal (fused) task, Self-MM's four tasks.
UNIMODAL_NAMES = {"T": "text", "A": "audio", "V": "vision"}
UNIMODAL = tuple(UNIMODAL_NAMES)
TASKS = ("M", *UNIMODAL)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def clip_key(video_id: str, clip_id: str) -> str:
    """The id MMSA uses for a clip; also its group name in the store."""
    return f"{video_id}$_${clip_id}"


class DatasetError(PipelineError, ValueError):
    """A dataset folder or label file that cannot be used at all, or one of its values (an id, a label).

    A ValueError too: the label-file readers catch the checks below (and their own ValueErrors) row by row.
    """


class Stage(StrEnum):
    """Where a clip failed or why it was left out (``Failure.stage``); the values are what stores, failure
    reports and retrain history hold."""

    LABELS = "labels"  # the label file's row is unusable (ids, numbers, split, range, duplicates)
    FOLDS = "folds"  # the clip's video is in no standard fold
    TEXT = "text"  # no transcript
    MEDIA = "media"  # no media file for the clip
    DECODE = "decode"  # the media cannot be read or decoded
    AUDIO = "audio"  # no usable audio for the clip
    EXTRACT = "extract"  # an extractor raised on the clip's source (recorded; the other sources go on)


@dataclass(frozen=True)
class ClipSpec:
    """One labelled clip: where its media is and what the label file says of it."""

    video_id: str
    clip_id: str
    text: str
    label: float
    split: str
    label_T: float = math.nan
    label_A: float = math.nan
    label_V: float = math.nan
    start: float = math.nan  # seconds in the source media; NaN: the whole file is the clip
    end: float = math.nan

    @property
    def key(self) -> str:
        return clip_key(self.video_id, self.clip_id)


@dataclass
class SourceVideo:
    """One media file, decoded once, with the clips it yields (one clip, or many segments)."""

    media: Path
    clips: list[ClipSpec]

    @property
    def name(self) -> str:
        """``<video_id>/<file stem>``: unique per source in both layouts (one clip per file, or segments)."""
        return f"{self.clips[0].video_id}/{self.media.stem}" if self.clips else self.media.stem


@dataclass
class DatasetSpec:
    """A dataset as read from disk: the work to do, and the rows rejected before any work."""

    name: str
    root: Path
    sources: list[SourceVideo]
    rejected: list[Failure] = field(default_factory=list)

    @property
    def clips(self) -> list[ClipSpec]:
        return [c for s in self.sources for c in s.clips]


def check_id(value: str, what: str) -> str:
    """An id that becomes part of a path: no separators, no '..', nothing absolute, not empty."""
    if not isinstance(value, str) or not _SAFE_ID.match(value) or ".." in value:
        raise DatasetError(f"unsafe {what} {value!r}: ids may only hold letters, digits, '_', '-' and '.'")
    return value


def parse_label(value: str | float | None, what: str = "label") -> float:
    """A finite float, or NaN for an empty cell; anything else is an error."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{what} {value!r} is not a number") from None


@dataclass
class Clip:
    """Everything the store holds about one labelled clip."""

    video_id: str
    clip_id: str
    split: str
    text: str
    label: float
    audio: np.ndarray  # (T_a, d_a) float32
    vision: np.ndarray  # (T_v, d_v) float32
    face_mask: np.ndarray  # (T_v,) bool: a face was found in that frame
    input_ids: np.ndarray  # (L,) int32, no padding
    attention_mask: np.ndarray  # (L,) int8
    label_T: float = math.nan
    label_A: float = math.nan
    label_V: float = math.nan
    media_sha256: str = ""
    start: float = math.nan  # segment start in the source media, seconds; NaN: the whole file
    end: float = math.nan
    audio_rate: float = 100.0  # audio feature frames per second
    vision_fps: float = 10.0  # vision frames per second

    @property
    def key(self) -> str:
        return clip_key(self.video_id, self.clip_id)


@dataclass
class ModalityProvenance:
    """Which extractor made a modality's features, with what settings, and what each column means."""

    extractor: str
    version: str
    config: dict
    config_hash: str
    feature_names: list[str] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)  # code version, libraries, model checksums


@dataclass
class Failure:
    """A clip (or a whole source video) that could not be extracted, and why."""

    video: str
    clip: str
    stage: Stage
    error: str

    def __post_init__(self) -> None:
        self.stage = Stage(self.stage)  # a plain string read back from a store or report becomes the enum


MMSA_EXTRACTOR = "mmsa-pickle"  # the provenance of features imported from an MMSA pickle (features/mmsa.py)

LABEL_BOUNDS = {"mosi": 3.0, "mosei": 3.0, "sims": 1.0, "simsv2": 1.0}


def label_bound(name: str) -> float | None:
    """The |label| limit of a known dataset (MOSI/MOSEI [-3, 3], SIMS [-1, 1]); None: unknown, not checked."""
    return LABEL_BOUNDS.get(name.lower())


def check_in_range(clip: ClipSpec, bound: float | None) -> None:
    """Raise DatasetError if a label of the clip (M, or a filled T/A/V) lies outside [-bound, bound]."""
    if bound is None:
        return
    for what in ("label", "label_T", "label_A", "label_V"):
        value = getattr(clip, what)
        if not math.isnan(value) and abs(value) > bound:
            raise DatasetError(f"{what} {value} is outside [-{bound:g}, {bound:g}] for this dataset")

"""Dataset layouts on disk -> the list of source videos and the labelled clips cut from each.

The MMSA layout (what MMSA and MMSA-FET read)::

    <root>/label.csv                 video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode
    <root>/Raw/<video_id>/<clip_id>.mp4   (or .wav / other extensions)

Optional ``start`` and ``end`` columns (seconds) mean ``Raw/<video_id>.<ext>`` is a whole source video and each
row is a segment of it: the source is decoded once and cut. Rows that cannot be used (bad id, NaN label,
duplicate, missing media, zero-length segment) are reported as failures, never silently dropped; a label file
that is missing a required column is an up-front error.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from features.store import SPLITS, Failure, clip_key

REQUIRED_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
MEDIA_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".wav", ".flac", ".mp3")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


class DatasetError(ValueError):
    """A dataset folder or label file that cannot be used at all."""


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
        raise ValueError(f"unsafe {what} {value!r}: ids may only hold letters, digits, '_', '-' and '.'")
    return value


def parse_label(value: str | float | None, what: str = "label") -> float:
    """A finite float, or NaN for an empty cell; anything else is an error."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None


def find_media(folder: Path, stem: str) -> Path | None:
    for ext in MEDIA_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def load_mmsa(root: str | Path, name: str | None = None) -> DatasetSpec:
    """Read an MMSA-layout dataset folder (see module docstring)."""
    root = Path(root)
    label_file = root / "label.csv"
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: no label file; expected the MMSA layout "
                           "<dataset>/label.csv + <dataset>/Raw/<video_id>/<clip_id>.mp4")
    with open(label_file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(f"{label_file}: missing column(s) {', '.join(missing)} (has: {', '.join(columns)})")
        rows = list(reader)
    segmented = "start" in columns and "end" in columns
    rejected: list[Failure] = []
    seen: set[str] = set()
    by_media: dict[Path, list[ClipSpec]] = {}
    for line, row in enumerate(rows, start=2):
        video_id, clip_id = (row.get("video_id") or "").strip(), (row.get("clip_id") or "").strip()
        try:
            clip, media = _clip_from_row(root, row, video_id, clip_id, segmented)
            if clip.key in seen:
                raise ValueError(f"duplicate id {clip.key!r}")
            seen.add(clip.key)
        except ValueError as err:
            rejected.append(Failure(video=video_id, clip=clip_id, stage="labels", error=f"{label_file}:{line}: {err}"))
            continue
        by_media.setdefault(media, []).append(clip)
    sources = [SourceVideo(media=m, clips=c) for m, c in by_media.items()]
    return DatasetSpec(name=name or root.name, root=root, sources=sources, rejected=rejected)


def _clip_from_row(root: Path, row: dict, video_id: str, clip_id: str, segmented: bool) -> tuple[ClipSpec, Path]:
    check_id(video_id, "video_id")
    check_id(clip_id, "clip_id")
    label = parse_label(row.get("label"))
    if math.isnan(label):
        raise ValueError("label is empty or NaN")
    split = (row.get("mode") or "").strip().lower()
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    start = end = math.nan
    if segmented:
        start, end = parse_label(row.get("start"), "start"), parse_label(row.get("end"), "end")
        if math.isnan(start) or math.isnan(end):
            raise ValueError("segment start/end missing")
        if end <= start:
            raise ValueError(f"zero-length segment (start {start}, end {end})")
        media = find_media(root / "Raw", video_id)
    else:
        media = find_media(root / "Raw" / video_id, clip_id)
    if media is None:
        where = f"Raw/{video_id}.*" if segmented else f"Raw/{video_id}/{clip_id}.*"
        raise ValueError(f"no media file {where} under {root}")
    text = (row.get("text") or "").strip()
    clip = ClipSpec(video_id=video_id, clip_id=clip_id, text=text, label=label, split=split,
                    label_T=parse_label(row.get("label_T"), "label_T"),
                    label_A=parse_label(row.get("label_A"), "label_A"),
                    label_V=parse_label(row.get("label_V"), "label_V"), start=start, end=end)
    return clip, media


LABEL_BOUNDS = {"mosi": 3.0, "mosei": 3.0, "sims": 1.0, "simsv2": 1.0}


def label_bound(name: str) -> float | None:
    """The |label| limit of a known dataset (MOSI/MOSEI [-3, 3], SIMS [-1, 1]); None: unknown, not checked."""
    return LABEL_BOUNDS.get(name.lower())


def check_in_range(clip: ClipSpec, bound: float | None) -> None:
    """Raise ValueError if a label of the clip (M, or a filled T/A/V) lies outside [-bound, bound]."""
    if bound is None:
        return
    for what in ("label", "label_T", "label_A", "label_V"):
        value = getattr(clip, what)
        if not math.isnan(value) and abs(value) > bound:
            raise ValueError(f"{what} {value} is outside [-{bound:g}, {bound:g}] for this dataset")


def reject_out_of_range(spec: DatasetSpec, bound: float | None) -> DatasetSpec:
    """Move clips whose labels are out of range for the dataset to ``spec.rejected``."""
    sources, rejected = [], list(spec.rejected)
    for source in spec.sources:
        kept = []
        for clip in source.clips:
            try:
                check_in_range(clip, bound)
                kept.append(clip)
            except ValueError as err:
                rejected.append(Failure(video=clip.video_id, clip=clip.clip_id, stage="labels", error=str(err)))
        if kept:
            sources.append(SourceVideo(media=source.media, clips=kept))
    return DatasetSpec(name=spec.name, root=spec.root, sources=sources, rejected=rejected)


def load_dataset(root: str | Path, name: str | None = None) -> DatasetSpec:
    """Read a dataset folder in any supported layout: a CMU segment file selects the CMU layout
    (features.cmu), otherwise the MMSA layout. Labels out of range for a known dataset are rejected."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    from features.cmu import detect_cmu, load_cmu  # features.cmu builds on this module

    if detect_cmu(root) is not None:
        return load_cmu(root, name)
    spec = load_mmsa(root, name)
    return reject_out_of_range(spec, label_bound(spec.name))

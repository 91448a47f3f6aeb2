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
from pathlib import Path

from features.types import (
    SPLITS,
    ClipSpec,
    DatasetError,
    DatasetSpec,
    Failure,
    SourceVideo,
    Stage,
    check_id,
    check_in_range,
    parse_label,
)

REQUIRED_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
MEDIA_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".wav", ".flac", ".mp3")


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
        raise DatasetError(
            f"{label_file}: no label file; expected the MMSA layout "
            "<dataset>/label.csv + <dataset>/Raw/<video_id>/<clip_id>.mp4"
        )
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
            rejected.append(
                Failure(video=video_id, clip=clip_id, stage=Stage.LABELS, error=f"{label_file}:{line}: {err}")
            )
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
    clip = ClipSpec(
        video_id=video_id,
        clip_id=clip_id,
        text=text,
        label=label,
        split=split,
        label_T=parse_label(row.get("label_T"), "label_T"),
        label_A=parse_label(row.get("label_A"), "label_A"),
        label_V=parse_label(row.get("label_V"), "label_V"),
        start=start,
        end=end,
    )
    return clip, media


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
                rejected.append(Failure(video=clip.video_id, clip=clip.clip_id, stage=Stage.LABELS, error=str(err)))
        if kept:
            sources.append(SourceVideo(media=source.media, clips=kept))
    return DatasetSpec(name=spec.name, root=spec.root, sources=sources, rejected=rejected)

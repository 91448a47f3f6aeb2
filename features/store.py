"""The HDF5 feature store: one file per dataset, one group per clip, ragged arrays, full provenance.

Layout (schema version 1)::

    /                       attrs: schema_version, package_version, dataset, feature_config_hash
    /provenance/<modality>  attrs: extractor, version, config (JSON), config_hash, feature_names (JSON),
                                   identity (JSON: feature-code version, library versions, model checksums)
    /index/keys, /index/splits   clip keys and their splits, in clip order (fast listing)
    /clips/<key>            datasets: audio (T_a, d_a) f32, vision (T_v, d_v) f32, face_mask (T_v,) bool,
                                      input_ids (L,) i32, attention_mask (L,) i8
                            attrs: video_id, clip_id, text, split, label, label_T, label_A, label_V,
                                   media_sha256, start, end, audio_rate, vision_fps
    /failures               JSON strings, one per failed clip: {"clip", "video", "stage", "error"}

Missing labels and whole-file clips (no segment times) are stored as NaN.
The file is written under a temporary name and renamed, so a reader never sees half a store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

from features.errors import PipelineError
from features.files import atomic_path
from features.types import Clip, Failure, ModalityProvenance

SCHEMA_VERSION = 1
_STR = h5py.string_dtype()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selfmm-pipeline")
    except PackageNotFoundError:
        return "0+unknown"


_ARRAYS = ("audio", "vision", "face_mask", "input_ids", "attention_mask")
_ARRAY_DTYPES = {
    "audio": np.float32,
    "vision": np.float32,
    "face_mask": bool,
    "input_ids": np.int32,
    "attention_mask": np.int8,
}
_ATTRS = (
    "video_id",
    "clip_id",
    "split",
    "text",
    "label",
    "label_T",
    "label_A",
    "label_V",
    "media_sha256",
    "start",
    "end",
    "audio_rate",
    "vision_fps",
)


class StoreError(PipelineError):
    """A feature store that is missing, unreadable or not of this schema."""


# h5py types ``group[name]`` as ``Group | Dataset | Datatype`` and attribute values as ``Empty | ndarray | ...``;
# the layout above fixes which is which, so these casts only tell the checker what the schema already says.
def _group(parent: h5py.Group, name: str) -> h5py.Group:
    return cast(h5py.Group, parent[name])


def _dataset(parent: h5py.Group, name: str) -> h5py.Dataset:
    return cast(h5py.Dataset, parent[name])


def _attr(attrs: h5py.AttributeManager, name: str) -> Any:
    return cast(Any, attrs[name])


def write_store(
    path: str | Path,
    clips: Iterable[Clip],
    provenance: dict[str, ModalityProvenance],
    failures: Iterable[Failure] = (),
    dataset: str = "",
    feature_config_hash: str = "",
) -> Path:
    """Write a whole store atomically: to a temporary name next to ``path`` first, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs.update(
                schema_version=SCHEMA_VERSION,
                package_version=package_version(),
                dataset=dataset,
                feature_config_hash=feature_config_hash,
            )
            prov = f.create_group("provenance")
            for modality, p in provenance.items():
                g = prov.create_group(modality)
                g.attrs.update(
                    extractor=p.extractor,
                    version=p.version,
                    config=json.dumps(p.config, sort_keys=True),
                    config_hash=p.config_hash,
                    feature_names=json.dumps(list(p.feature_names)),
                    identity=json.dumps(p.identity, sort_keys=True),
                )
            group = f.create_group("clips")
            keys, splits = [], []
            for clip in clips:
                _write_clip(group, clip)
                keys.append(clip.key)
                splits.append(clip.split)
            index = f.create_group("index")
            index.create_dataset("keys", data=np.array(keys, dtype=object), dtype=_STR, track_times=False)
            index.create_dataset("splits", data=np.array(splits, dtype=object), dtype=_STR, track_times=False)
            rows = [json.dumps(asdict(x), sort_keys=True) for x in failures]
            f.create_dataset("failures", data=np.array(rows, dtype=object), dtype=_STR, track_times=False)
    return path


def _write_clip(parent: h5py.Group, clip: Clip) -> None:
    if clip.key in parent:
        raise StoreError(f"duplicate clip id {clip.key!r}")
    g = parent.create_group(clip.key)
    for name in _ARRAYS:
        data = np.asarray(getattr(clip, name), dtype=_ARRAY_DTYPES[name])
        g.create_dataset(name, data=data, track_times=False)
    g.attrs.update({name: getattr(clip, name) for name in _ATTRS})


class FeatureStore:
    """Read-only access to a feature store; use as a context manager or call ``close()``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such feature store")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({err})") from None
        version = self._file.attrs.get("schema_version")
        if version != SCHEMA_VERSION or "clips" not in self._file or "index" not in self._file:
            self._file.close()
            raise StoreError(f"{self.path}: not a feature store of schema {SCHEMA_VERSION} (found {version!r})")
        self._keys = [k.decode() if isinstance(k, bytes) else k for k in _dataset(self._file, "index/keys")[()]]
        self._splits = [s.decode() if isinstance(s, bytes) else s for s in _dataset(self._file, "index/splits")[()]]

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def dataset(self) -> str:
        return str(self._file.attrs.get("dataset", ""))

    @property
    def feature_config_hash(self) -> str:
        return str(self._file.attrs.get("feature_config_hash", ""))

    @property
    def attrs(self) -> dict:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._file.attrs.items()}

    def keys(self, split: str | None = None) -> list[str]:
        """Clip keys in store order, optionally of one split."""
        if split is None:
            return list(self._keys)
        return [k for k, s in zip(self._keys, self._splits) if s == split]

    def split_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self._splits:
            counts[s] = counts.get(s, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._keys)

    def read(self, key: str) -> Clip:
        try:
            g = _group(_group(self._file, "clips"), key)
        except KeyError:
            raise KeyError(f"{self.path}: no clip {key!r}") from None
        values: dict[str, Any] = {name: _dataset(g, name)[()] for name in _ARRAYS}
        for name in _ATTRS:
            v = _attr(g.attrs, name)
            values[name] = v.item() if hasattr(v, "item") else v
        return Clip(**values)

    def clips(self, split: str | None = None) -> Iterator[Clip]:
        for key in self.keys(split):
            yield self.read(key)

    def read_labels(self, split: str | None = None, name: str = "label") -> dict[str, float]:
        """One label per key (``label``, or ``label_T/A/V``), from attributes only (no array reads)."""
        return {k: float(v) for k, v in self.read_attribute(name, split).items()}

    def read_attribute(self, name: str, split: str | None = None) -> dict[str, Any]:
        """One clip attribute (see the layout above) per key, without reading any array."""
        group = _group(self._file, "clips")
        return {k: _attr(_group(group, k).attrs, name) for k in self.keys(split)}

    @property
    def provenance(self) -> dict[str, ModalityProvenance]:
        out = {}
        for modality, g in _group(self._file, "provenance").items():
            a = g.attrs
            out[modality] = ModalityProvenance(
                extractor=str(a["extractor"]),
                version=str(a["version"]),
                config=json.loads(a["config"]),
                config_hash=str(a["config_hash"]),
                feature_names=json.loads(a["feature_names"]),
                identity=json.loads(a.get("identity", "{}")),
            )
        return out

    def feature_dims(self) -> dict[str, int]:
        """Width of each feature modality, from the provenance's feature names."""
        return {m: len(p.feature_names) for m, p in self.provenance.items() if m != "text"}

    @property
    def failures(self) -> list[Failure]:
        return [Failure(**json.loads(row)) for row in _dataset(self._file, "failures")[()]]

    def info(self) -> dict:
        """A JSON-ready summary: clips per split, feature dims and names, provenance, failures."""
        return {
            "path": str(self.path),
            "dataset": self.dataset,
            "schema_version": int(_attr(self._file.attrs, "schema_version")),
            "package_version": str(self._file.attrs.get("package_version", "")),
            "feature_config_hash": self.feature_config_hash,
            "clips": len(self),
            "splits": self.split_counts(),
            "feature_dims": self.feature_dims(),
            "provenance": {m: asdict(p) for m, p in self.provenance.items()},
            "failures": [asdict(f) for f in self.failures],
        }

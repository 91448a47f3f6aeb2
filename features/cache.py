"""Content-addressed shard cache: one file per (source media, modality, extractor config, segment list).

Workers never share a writer: each source video's features land in their own shard, written atomically, and
a single merge step builds the dataset store. A re-run re-uses every shard whose key matches, so adding ten
clips costs ten clips of work, and changing the face settings leaves the audio shards valid.

It is only a cache, and it heals: a shard is read whole, every member's CRC-32 checked (zip's own, which numpy's
loader verifies as it reads), and a shard that fails is moved aside as ``<name>.damaged`` with a warning naming
it, so its source is extracted again in the same run and no retry reads it twice. An extractor record carries the
hash of its content and is handled the same way; the media hash index replaces itself (features.hash_index).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from features.config import Modality, stable_hash
from features.files import atomic_open, atomic_write_text
from features.hash_index import MediaHashes
from features.types import ModalityProvenance


def segments_hash(segments: list[tuple[str, float, float]]) -> str:
    """Hash of the (clip key, start, end) list cut from one source; NaN times mean the whole file."""
    return stable_hash([[k, repr(s), repr(e)] for k, s, e in segments])


MEDIA_INDEX = "media-sha256.sqlite"  # the stat index of the media SHA-256s, in the cache folder
DAMAGED = ".damaged"  # the suffix a cache file that failed its check is moved aside under
log = logging.getLogger(__name__)


class ShardCache:
    """Shards under ``root/<modality>/<sha[:2]>/<sha>-<key>-<segments hash>.npz``, where the key covers the
    extractor's config and identity (``features.extract.Extractors.key``); the media SHA-256s come from the
    stat index ``root/media-sha256.sqlite`` (``features.hash_index``), so unchanged media are not read again."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.media_hashes = MediaHashes(self.root / MEDIA_INDEX)

    def _path(self, modality: Modality, media_sha: str, key: str, seg_hash: str) -> Path:
        return self.root / modality.value / media_sha[:2] / f"{media_sha}-{key}-{seg_hash}.npz"

    def load(self, modality: Modality, media_sha: str, key: str, seg_hash: str) -> dict[str, np.ndarray] | None:
        """The shard's arrays, or None when it is not cached or fails its check (then it is moved aside)."""
        path = self._path(modality, media_sha, key, seg_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}  # each member read whole: its CRC is checked
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            set_aside(path, err)
            return None

    def save(self, modality: Modality, media_sha: str, key: str, seg_hash: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(modality, media_sha, key, seg_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # numpy leaves its zip writer open when a write fails: it writes to memory first
        np.savez(buffer, **arrays)
        with atomic_open(path, "wb") as f:
            f.write(buffer.getbuffer())

    def _meta_path(self, modality: Modality, key: str) -> Path:
        return self.root / modality.value / f"extractor-{key}.json"

    def load_provenance(self, modality: Modality, key: str) -> ModalityProvenance | None:
        """The extractor's record, or None when there is none or it fails its check (then it is moved aside)."""
        path = self._meta_path(modality, key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("hash") != stable_hash(record["provenance"]):
                raise ValueError("its hash does not match its content")
            return ModalityProvenance(**record["provenance"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            set_aside(path, err)
            return None

    def save_provenance(self, modality: Modality, key: str, provenance: ModalityProvenance) -> None:
        path = self._meta_path(modality, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = asdict(provenance)
        record = {"provenance": content, "hash": stable_hash(content)}
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))


def set_aside(path: Path, err: Exception) -> None:
    """Move a damaged cache file out of the way (kept for inspection), so that it is made again."""
    aside = path.with_name(path.name + DAMAGED)
    try:
        path.replace(aside)
    except FileNotFoundError:
        return  # another process set it aside first
    log.warning("damaged cache file %s (%s: %s): moved to %s, made again", path, type(err).__name__, err, aside.name)

"""From the HDF5 feature store to padded batches.

The store keeps every clip at its true length. Batches are padded to their own longest clip (dynamic padding)
instead of to one global length; ``fixed_padding`` restores the reference's shapes for comparison. The
LSTMs read their state at each clip's true length either way, and BERT runs on the real tokens only
(``selfmm.text_encoder.TextEncoder``), so what padding still costs is the LSTM steps past a batch's shorter clips.
Length bucketing (``bucket``) groups clips of similar length and saves some of those, at the price of a batch
composition that differs from the reference's uniform shuffling; since BERT packs its tokens that is at most
about 10% on MOSI, so it stays off by default.

Sequence lengths: audio and vision lengths are the full stored lengths. Vision frames without a face are
zero rows and stay in the sequence (the face mask is informational), as the reference's padded pickles
also keep zero frames inside a clip. A clip with no audio or no vision frames gets one zero frame and
length 1, so that there is a state to read: its LSTM state then comes from a zero input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from features.errors import PipelineError
from features.store import FeatureStore
from features.types import Clip
from selfmm.config import TrainConfig

BUCKET_BATCHES = 32  # length bucketing sorts windows of this many batches, then shuffles the batches


class DataError(PipelineError):
    """Training data that cannot be used: a missing split, wrong feature widths, NaN values."""


class Item(NamedTuple):
    """One clip as tensors, with its position in the dataset (which addresses the ULGM memory)."""

    index: int
    input_ids: torch.Tensor  # (L,) long
    attention_mask: torch.Tensor  # (L,) long
    audio: torch.Tensor  # (T_a, d_a) float32
    vision: torch.Tensor  # (T_v, d_v) float32
    label: float  # NaN where unknown (prediction only)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L) long, 0-padded
    attention_mask: torch.Tensor  # (B, L) long
    audio: torch.Tensor  # (B, T_a, d_a) float32, 0-padded
    audio_lengths: torch.Tensor  # (B,) long, on the CPU; at least 1 (the step whose LSTM state is read)
    vision: torch.Tensor  # (B, T_v, d_v)
    vision_lengths: torch.Tensor  # (B,) long, CPU, at least 1
    labels: torch.Tensor  # (B,) float32: the multimodal label y_m
    index: torch.Tensor  # (B,) long: dataset positions

    def to(self, device: torch.device) -> Batch:
        """Everything onto ``device`` except the lengths, which packing needs on the CPU."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if not name.endswith("_lengths"):
                moved[name] = value.to(device, non_blocking=True)
        return Batch(**moved)


class ClipDataset(Dataset):
    """The clips of one split, checked once up front, held in memory or read from the store on demand.

    Every clip is read and checked when the dataset is built, so bad data fails before training starts,
    naming the clip. Audio ``-inf`` values become 0, as the reference loader does (COVAREP features hold
    them); any other NaN or infinity is an error.
    """

    def __init__(
        self,
        keys: Sequence[str],
        read: Callable[[str], Clip],
        dims: dict[str, int],
        in_memory: bool = True,
        require_labels: bool = True,
        source: str = "",
    ):
        self.keys = list(keys)
        self.dims = dims
        self._read = read
        self._source = source
        self._require_labels = require_labels
        self._items: list[Item] | None = [] if in_memory else None
        lengths, labels, top_ids = [], [], []
        for i in range(len(self.keys)):
            item = self._load(i)
            lengths.append((len(item.input_ids), len(item.audio), len(item.vision)))
            labels.append(item.label)
            top_ids.append(int(item.input_ids.max()))
            if self._items is not None:
                self._items.append(item)
        self.lengths = np.array(lengths, dtype=np.int64).reshape(-1, 3)  # (N, 3): tokens, audio, vision
        self.labels = np.array(labels, dtype=np.float32)  # the multimodal label y_M of each clip
        self.max_token_ids = np.array(top_ids, dtype=np.int64)  # to check against the BERT's vocabulary

    @classmethod
    def from_store(
        cls,
        store: FeatureStore,
        split: str | None,
        dims: dict[str, int],
        in_memory: bool = True,
        require_labels: bool = True,
    ) -> ClipDataset:
        """The clips of ``split`` (None: all clips) in store order."""
        keys = store.keys(split)
        if not keys:
            counts = ", ".join(f"{s}: {n}" for s, n in store.split_counts().items()) or "no clips at all"
            raise DataError(f"{store.path}: split {split!r} has no clips (store has {counts})")
        return cls(keys, store.read, dims, in_memory, require_labels, source=str(store.path))

    @classmethod
    def from_clips(cls, clips: Sequence[Clip], dims: dict[str, int], require_labels: bool = False) -> ClipDataset:
        by_key = {c.key: c for c in clips}
        return cls(list(by_key), by_key.__getitem__, dims, True, require_labels, source="clips")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Item:
        return self._items[i] if self._items is not None else self._load(i)

    def _load(self, i: int) -> Item:
        key = self.keys[i]
        clip = self._read(key)
        where = f"{self._source}: clip {key!r}"
        audio = _frames(clip.audio, self.dims["audio"], "audio", where)
        audio[np.isneginf(audio)] = 0.0
        vision = _frames(clip.vision, self.dims["vision"], "vision", where)
        for name, values in (("audio", audio), ("vision", vision)):
            if not np.isfinite(values).all():
                raise DataError(f"{where}: NaN or infinite values in its {name} features")
        if len(clip.input_ids) == 0:
            raise DataError(f"{where}: no text tokens (expected at least [CLS] and [SEP])")
        label = float(clip.label)
        if self._require_labels and not np.isfinite(label):
            raise DataError(f"{where}: label is {label} (a finite multimodal label is needed)")
        return Item(
            i,
            torch.as_tensor(np.asarray(clip.input_ids, dtype=np.int64)),
            torch.as_tensor(np.asarray(clip.attention_mask, dtype=np.int64)),
            torch.from_numpy(audio),
            torch.from_numpy(vision),
            label,
        )


def frame_statistics(items: Iterable[Item], dims: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and std of every audio and vision feature over all frames of ``items`` (float64 sums in the items'
    order, so the same data gives the same bits). A constant feature gets std 1 (left as it is)."""
    names = ("audio", "vision")
    totals = {name: np.zeros(dims[name]) for name in names}
    squares = {name: np.zeros(dims[name]) for name in names}
    counts = dict.fromkeys(names, 0)
    for item in items:
        for name in names:
            frames = getattr(item, name).numpy().astype(np.float64)
            totals[name] += frames.sum(0)
            squares[name] += (frames**2).sum(0)
            counts[name] += len(frames)
    out = {}
    for name in names:
        n = max(counts[name], 1)
        mean = totals[name] / n
        std = np.sqrt(np.maximum(squares[name] / n - mean**2, 0.0))
        std[std < 1e-6] = 1.0
        out[name] = (torch.from_numpy(mean).float(), torch.from_numpy(std).float())
    return out


def _frames(values: np.ndarray, dim: int, name: str, where: str) -> np.ndarray:
    """A (T, dim) float32 copy; an empty array of any shape counts as zero frames."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return np.zeros((0, dim), np.float32)
    if values.ndim != 2 or values.shape[1] != dim:
        raise DataError(f"{where}: {name} features have shape {values.shape}, expected (frames, {dim})")
    return values.copy()


def fits_in_memory(store: FeatureStore, config: TrainConfig) -> bool:
    """Load the store whole when its file (uncompressed HDF5, so about its data size) fits the budget."""
    return store.path.stat().st_size <= config.memory_budget_mb * 2**20


def feature_dims(store: FeatureStore) -> dict[str, int]:
    """Audio and vision widths: from the provenance's feature names, else from the first clip."""
    dims = {m: n for m, n in store.feature_dims().items() if n > 0}
    missing = [m for m in ("audio", "vision") if m not in dims]
    if missing:
        keys = store.keys()
        if not keys:
            raise DataError(f"{store.path}: the store holds no clips")
        clip = store.read(keys[0])
        for m in missing:
            dims[m] = int(np.atleast_2d(getattr(clip, m)).shape[-1])
    return {"audio": dims["audio"], "vision": dims["vision"]}


def collate(items: Sequence[Item], fixed_padding: Sequence[int] | None = None) -> Batch:
    """Pad a list of clips to the longest of each modality (or to ``fixed_padding``, never shorter)."""
    min_tokens, min_audio, min_vision = fixed_padding or (1, 1, 1)
    ids, _ = _pad([x.input_ids for x in items], min_tokens)
    mask, _ = _pad([x.attention_mask for x in items], min_tokens)
    audio, audio_lengths = _pad([x.audio for x in items], min_audio)
    vision, vision_lengths = _pad([x.vision for x in items], min_vision)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        audio=audio,
        audio_lengths=audio_lengths.clamp(min=1),
        vision=vision,
        vision_lengths=vision_lengths.clamp(min=1),
        labels=torch.tensor([x.label for x in items], dtype=torch.float32),
        index=torch.tensor([x.index for x in items], dtype=torch.long),
    )


def _pad(seqs: Sequence[torch.Tensor], min_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad along the first axis to max(longest, min_length, 1); also return the true lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = max(int(lengths.max()), min_length, 1)
    out = seqs[0].new_zeros((len(seqs), width) + tuple(seqs[0].shape[1:]))
    for row, s in enumerate(seqs):
        out[row, : len(s)] = s
    return out, lengths


class BatchOrder(Sampler[list[int]]):
    """Batches of dataset positions: shuffled each epoch by a seeded generator, optionally length-bucketed.

    Bucketing sorts windows of ``BUCKET_BATCHES`` batches by size (each modality's length relative to its
    mean, summed, so tokens count as much as frames) before cutting them into batches, then shuffles the
    batch order: less padding, nearly the same randomness. The reference shuffles uniformly, so bucketing is
    off by default.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        bucket: bool = False,
    ):
        self.sizes = (lengths / np.maximum(lengths.mean(axis=0), 1)).sum(axis=1)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.bucket = bucket

    def __len__(self) -> int:
        return -(-len(self.sizes) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.sizes)
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else list(range(n))
        if self.bucket:
            window = self.batch_size * BUCKET_BATCHES
            order = [
                i
                for start in range(0, n, window)
                for i in sorted(order[start : start + window], key=lambda j: self.sizes[j])
            ]
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return iter(batches)


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    bucket: bool = False,
    fixed_padding: Sequence[int] | None = None,
) -> DataLoader:
    """A single-process loader (the store handle is not shared with workers)."""
    order = BatchOrder(dataset.lengths, batch_size, shuffle, generator, bucket)
    return DataLoader(dataset, batch_sampler=order, collate_fn=lambda items: collate(items, fixed_padding))

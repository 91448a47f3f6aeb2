"""Loading the feature store: dynamic padding, zero-length sequences, batching order, bad input."""

import dataclasses
import math
from typing import cast

import numpy as np
import pytest
import torch

from features.store import FeatureStore, write_store
from features.types import Clip, ModalityProvenance
from selfmm.data import BatchOrder, ClipDataset, DataError, Item, collate, feature_dims

DIMS = {"audio": 3, "vision": 2}


def _clip(
    key: str, split: str = "train", label: float = 0.5, t_a: int = 4, t_v: int = 3, tokens: int = 5, **changes
) -> Clip:
    rng = np.random.default_rng(len(key) + t_a)
    clip = Clip(
        video_id=key,
        clip_id="0",
        split=split,
        text="x",
        label=label,
        audio=rng.standard_normal((t_a, DIMS["audio"])).astype(np.float32),
        vision=rng.standard_normal((t_v, DIMS["vision"])).astype(np.float32),
        face_mask=np.ones(t_v, bool),
        input_ids=np.arange(2, 2 + tokens, dtype=np.int32),
        attention_mask=np.ones(tokens, np.int8),
    )
    return dataclasses.replace(clip, **changes)


def _store(path, clips) -> FeatureStore:
    provenance = {
        "audio": ModalityProvenance("x", "0", {}, "a", ["a0", "a1", "a2"]),
        "vision": ModalityProvenance("x", "0", {}, "v", ["v0", "v1"]),
    }
    return FeatureStore(write_store(path, clips, provenance))


def _item(index: int, tokens: int, t_a: int, t_v: int) -> Item:
    return Item(
        index,
        torch.arange(1, tokens + 1),
        torch.ones(tokens, dtype=torch.long),
        torch.ones(t_a, 3),
        torch.ones(t_v, 2),
        float(index),
    )


def test_collate_pads_to_the_longest_clip_of_the_batch():
    batch = collate([_item(7, 4, 10, 0), _item(3, 2, 6, 5)])
    assert batch.input_ids.shape == (2, 4) and batch.audio.shape == (2, 10, 3) and batch.vision.shape == (2, 5, 2)
    assert batch.input_ids[1].tolist() == [1, 2, 0, 0]
    assert batch.attention_mask[1].tolist() == [1, 1, 0, 0]
    assert batch.audio[1, 6:].abs().sum() == 0
    assert batch.index.tolist() == [7, 3] and batch.labels.tolist() == [7.0, 3.0]


def test_zero_length_sequences_get_one_zero_frame_and_length_one():
    batch = collate([_item(0, 3, 0, 0), _item(1, 3, 0, 0)])
    assert batch.audio.shape == (2, 1, 3) and batch.vision.shape == (2, 1, 2)
    assert batch.audio.abs().sum() == 0
    assert batch.audio_lengths.tolist() == [1, 1] and batch.vision_lengths.tolist() == [1, 1]


def test_fixed_padding_pads_to_at_least_the_given_lengths():
    batch = collate([_item(0, 4, 10, 3)], fixed_padding=[50, 375, 500])
    assert batch.input_ids.shape == (1, 50) and batch.audio.shape == (1, 375, 3) and batch.vision.shape == (1, 500, 2)
    assert batch.audio_lengths.tolist() == [10] and batch.vision_lengths.tolist() == [3]


def test_batch_order_is_a_seeded_shuffle_covering_every_clip_once():
    lengths = np.random.default_rng(0).integers(1, 100, size=(50, 3))
    orders = [list(BatchOrder(lengths, 8, True, torch.Generator().manual_seed(s))) for s in (1, 1, 2)]
    assert orders[0] == orders[1] != orders[2]
    assert sorted(i for batch in orders[0] for i in batch) == list(range(50))
    assert [len(b) for b in orders[0]] == [8] * 6 + [2]
    assert list(BatchOrder(lengths, 8, False))[0] == list(range(8))


def test_length_bucketing_cuts_padding_in_every_modality():
    rng = np.random.default_rng(0)
    duration = rng.integers(1, 100, size=200)
    lengths = np.stack([duration // 4 + rng.integers(0, 5, 200), 3 * duration, 4 * duration], axis=1)

    def padding(bucket: bool) -> np.ndarray:
        order = BatchOrder(lengths, 16, True, torch.Generator().manual_seed(0), bucket=bucket)
        return cast(np.ndarray, sum(lengths[b].max(axis=0) * len(b) - lengths[b].sum(axis=0) for b in order))

    assert (padding(True) < padding(False) / 4).all()


def test_dataset_reads_in_store_order_and_streams_the_same_items(tmp_path):
    clips = [_clip("a", t_a=0), _clip("b", label=-1.0), _clip("c", split="valid")]
    with _store(tmp_path / "s.h5", clips) as store:
        loaded = ClipDataset.from_store(store, "train", DIMS, in_memory=True)
        streamed = ClipDataset.from_store(store, "train", DIMS, in_memory=False)
        assert loaded.keys == ["a$_$0", "b$_$0"] and loaded.labels.tolist() == [0.5, -1.0]
        assert loaded.lengths.tolist() == [[5, 0, 3], [5, 4, 3]]
        for i in range(2):
            for a, b in zip(loaded[i], streamed[i]):
                assert torch.equal(a, cast(torch.Tensor, b)) if isinstance(a, torch.Tensor) else a == b


def test_audio_minus_infinity_becomes_zero_as_in_the_reference_loader(tmp_path):
    audio = np.full((2, 3), -np.inf, np.float32)
    with _store(tmp_path / "s.h5", [_clip("a", audio=audio)]) as store:
        assert ClipDataset.from_store(store, "train", DIMS)[0].audio.abs().sum() == 0


def test_feature_dims_come_from_provenance(tmp_path):
    with _store(tmp_path / "s.h5", [_clip("a")]) as store:
        assert feature_dims(store) == DIMS


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_missing_split_is_named(tmp_path, split):
    clips = [_clip("a"), _clip("b", split="valid" if split == "test" else "test")]
    with _store(tmp_path / "s.h5", clips) as store, pytest.raises(DataError, match=f"split '{split}' has no clips"):
        ClipDataset.from_store(store, split, DIMS)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"audio": np.zeros((4, 5), np.float32)},
            r"clip 'bad\$_\$0'.*audio features have shape \(4, 5\), expected \(frames, 3\)",
        ),
        ({"vision": np.full((3, 2), np.nan, np.float32)}, r"clip 'bad\$_\$0'.*NaN or infinite values in its vision"),
        ({"audio": np.full((4, 3), np.inf, np.float32)}, r"clip 'bad\$_\$0'.*NaN or infinite values in its audio"),
        ({"label": math.nan}, r"clip 'bad\$_\$0'.*label is nan"),
        (
            {"input_ids": np.zeros(0, np.int32), "attention_mask": np.zeros(0, np.int8)},
            r"clip 'bad\$_\$0'.*no text tokens",
        ),
    ],
)
def test_bad_clips_are_refused_naming_clip_and_problem(tmp_path, changes, message):
    with _store(tmp_path / "s.h5", [_clip("ok"), _clip("bad", **changes)]) as store:
        with pytest.raises(DataError, match=message):
            ClipDataset.from_store(store, "train", DIMS)


def test_unlabelled_clips_are_fine_for_prediction():
    dataset = ClipDataset.from_clips([_clip("a", label=math.nan)], DIMS)
    assert math.isnan(dataset.labels[0])

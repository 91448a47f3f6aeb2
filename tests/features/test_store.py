import json
import math

import h5py
import numpy as np
import pytest

from features.store import FeatureStore, StoreError, write_store
from features.types import Clip, Failure, ModalityProvenance, Stage


def make_clip(i: int, split: str = "train") -> Clip:
    rng = np.random.default_rng(i)
    return Clip(
        video_id=f"v{i}",
        clip_id=str(i),
        split=split,
        text=f"clip {i}",
        label=i / 10,
        audio=rng.standard_normal((5 + i, 3)).astype(np.float32),
        vision=rng.standard_normal((2 + i, 4)).astype(np.float32),
        face_mask=np.arange(2 + i) % 2 == 0,
        input_ids=np.array([101, 7 + i, 102], np.int32),
        attention_mask=np.ones(3, np.int8),
        label_A=0.5,
        media_sha256="ab" * 32,
        start=1.0,
        end=2.5,
    )


PROV = {
    "audio": ModalityProvenance("opensmile", "2.6.0", {"feature_set": "x"}, "h1", ["a", "b", "c"]),
    "vision": ModalityProvenance("mp", "0.10", {"fps": 10}, "h2", ["p", "q", "r", "s"]),
    "text": ModalityProvenance("tok", "5", {"model": "m"}, "h3", []),
}


def test_round_trip_keeps_ragged_arrays_labels_and_provenance(tmp_path):
    clips = [make_clip(0), make_clip(1, "valid"), make_clip(2, "test")]
    failures = [Failure(video="v9", clip="9", stage=Stage.DECODE, error="corrupt")]
    path = write_store(tmp_path / "s.h5", clips, PROV, failures, dataset="toy", feature_config_hash="abc")
    with FeatureStore(path) as store:
        assert store.keys() == [c.key for c in clips]
        assert store.keys("valid") == ["v1$_$1"]
        assert store.split_counts() == {"train": 1, "valid": 1, "test": 1}
        assert store.feature_dims() == {"audio": 3, "vision": 4}
        assert store.provenance["audio"].feature_names == ["a", "b", "c"]
        assert store.failures == failures
        back = store.read("v2$_$2")
        np.testing.assert_array_equal(back.audio, clips[2].audio)
        np.testing.assert_array_equal(back.face_mask, clips[2].face_mask)
        assert back.audio.shape == (7, 3) and back.vision.dtype == np.float32
        assert back.label == pytest.approx(0.2) and back.label_A == 0.5 and math.isnan(back.label_T)
        assert (back.start, back.end) == (1.0, 2.5)
        info = store.info()
        json.dumps(info)
        assert info["clips"] == 3 and info["dataset"] == "toy"


def test_duplicate_clip_is_refused_and_no_file_is_left(tmp_path):
    with pytest.raises(StoreError, match="duplicate"):
        write_store(tmp_path / "s.h5", [make_clip(0), make_clip(0)], PROV)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_store(tmp_path):
    path = write_store(tmp_path / "s.h5", [make_clip(0)], PROV)

    def exploding():
        yield make_clip(1)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_store(path, exploding(), PROV)
    with FeatureStore(path) as store:
        assert store.keys() == ["v0$_$0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_reader_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(StoreError, match="no such"):
        FeatureStore(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="schema"):
        FeatureStore(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(StoreError, match="HDF5"):
        FeatureStore(tmp_path / "text.h5")


def test_same_content_gives_identical_bytes(tmp_path):
    a = write_store(tmp_path / "a.h5", [make_clip(0), make_clip(1)], PROV)
    b = write_store(tmp_path / "b.h5", [make_clip(0), make_clip(1)], PROV)
    assert a.read_bytes() == b.read_bytes()

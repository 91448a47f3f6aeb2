"""What computed the features is part of their identity: a fixed real clip's features are pinned here, per
feature-code version, so a change of output without a version bump fails; and a change of identity re-extracts
that modality only.

The digests are also our check that extraction is byte-identical across CPUs (openSMILE, PyAV/FFmpeg,
MediaPipe, the FER model): they were recorded on an AMD EPYC (Zen 5, AVX-512) and must hold on any x86-64
machine with AVX2. A failure on another machine with an unchanged environment means extraction stopped being
portable there, not that the code changed.
"""

from __future__ import annotations

import hashlib

import pytest

from features.cache import ShardCache
from features.config import ExtractConfig, Modality
from features.datasets import load_dataset
from features.extract import Extractors, SourceStatus, build_store, extract_file, extract_source, thread_extractors
from features.extractors import audio, face_mediapipe, text
from features.media import DECODER_VERSION
from features.store import FeatureStore
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA

CLIP = "0h-zjBukYpk_1"
# (feature-code versions, sha256 of the array bytes) of CLIP with the default ExtractConfig.
PINNED = {
    "audio": (
        (DECODER_VERSION, audio.FEATURE_VERSION),
        (1, 1),
        "9c7c8ef62eac6b009a46f1e77301ede756e8119c388d2e42a4d7574deafc6f2e",
    ),
    "vision": (
        (DECODER_VERSION, face_mediapipe.FEATURE_VERSION),
        (1, 1),
        "09690504a5d3e552b5cada32d0a6f657cef4d7f18aac12a27d803dd119cd3928",
    ),
    "face_mask": (
        (DECODER_VERSION, face_mediapipe.FEATURE_VERSION),
        (1, 1),
        "c8139665614f96cfe0af03533e152056b438cc8656d8402fea99e2f275164050",
    ),
    "input_ids": ((text.FEATURE_VERSION,), (1,), "3760ffdfe44ef767b5775306abf6dc48e06662cdaed0657d4c3733216a812a1e"),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("array", list(PINNED))
def test_a_fixed_clip_gives_the_pinned_features_of_its_code_version(array):
    versions, pinned_versions, digest = PINNED[array]
    clip = extract_file(MOSI_MEDIA / f"{CLIP}.mp4", MOSI_CLIPS[CLIP][0], ExtractConfig())
    found = hashlib.sha256(getattr(clip, array).tobytes()).hexdigest()
    if versions != pinned_versions:
        pytest.fail(
            f"the feature code of {array} is at version {versions}, pinned here for {pinned_versions}: "
            f"record its new digest {found}"
        )
    assert found == digest, (
        f"{array} of {CLIP} changed without a feature-code version bump: bump the version "
        f"(features.media.DECODER_VERSION or the extractor's FEATURE_VERSION) and record {found}"
    )


def test_the_identity_names_code_libraries_and_model_files():
    extractors = thread_extractors(ExtractConfig())
    assert {"decoder", "av", "ffmpeg", "opencv", "code", "opensmile"} <= set(extractors.identity(Modality.AUDIO))
    vision = extractors.identity(Modality.VISION)
    assert {"mediapipe", "ai-edge-litert"} <= set(vision)
    assert vision["fer_model"] == face_mediapipe.FER_MODEL_SHA256
    assert len(extractors.identity(Modality.TEXT)["vocabulary"]) == 64


def test_a_changed_identity_re_extracts_that_modality_only(mosi_dataset, tmp_path, monkeypatch):
    spec = load_dataset(mosi_dataset)
    config, cache, source = ExtractConfig(), ShardCache(tmp_path / "cache"), spec.sources[0]
    assert extract_source(source, config, cache, Extractors(config)).status is SourceStatus.EXTRACTED
    build_store(tmp_path / "before.h5", spec, config, cache, Extractors(config))
    audio_shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "audio").rglob("*.npz")}
    vision_shards = set((tmp_path / "cache" / "vision").rglob("*.npz"))

    # A new face-feature code version, the same config: vision is re-made, audio's shards are re-used as they are.
    monkeypatch.setattr(face_mediapipe, "FEATURE_VERSION", face_mediapipe.FEATURE_VERSION + 1)
    extractors = Extractors(config)
    assert extract_source(source, config, cache, extractors).status is SourceStatus.EXTRACTED
    build_store(tmp_path / "after.h5", spec, config, cache, extractors)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "audio").rglob("*.npz")} == audio_shards
    assert len(set((tmp_path / "cache" / "vision").rglob("*.npz")) - vision_shards) == len(spec.sources)
    with FeatureStore(tmp_path / "before.h5") as old, FeatureStore(tmp_path / "after.h5") as new:
        assert (old.provenance["vision"].identity["code"], new.provenance["vision"].identity["code"]) == ("1", "2")
        assert old.provenance["audio"].identity == new.provenance["audio"].identity
        assert old.feature_config_hash != new.feature_config_hash

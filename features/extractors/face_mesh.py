"""Face landmarks from MediaPipe's Face Mesh models, run on LiteRT's built-in kernels so they are the same bytes
on every CPU.

MediaPipe's own graph runs these models through XNNPACK, which picks other matrix kernels on some CPUs (AMD Zen
1 and Hygon Dhyana), and so other landmarks. LiteRT's built-in kernels gave the same bytes on every CPU we
tried. The models are those the ``mediapipe`` wheel ships: the short-range face detector (BlazeFace, 128x128)
and the 468-point face mesh (192x192). Per frame:

1. the frame, letterboxed to a square, goes to the detector; boxes scoring above the threshold are merged by
   weighted non-maximum suppression, and the largest face is kept;
2. its box, squared and grown by ``ROI_SCALE`` and turned so the eyes are level, is cut out at 192x192;
3. the mesh model gives 468 points in that crop, which are mapped back to frame pixels.

Everything around the models is float64 elementwise arithmetic or OpenCV on grid-rounded matrices
(``features.grid``), which is exact or the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

from features.extractors.face import FaceModelMissing
from features.files import file_sha256
from features.grid import settle

DETECTOR_MODEL = "face_detection/face_detection_short_range.tflite"
MESH_MODEL = "face_landmark/face_landmark.tflite"

DETECTOR_SIZE = 128
# The detector's anchors: one grid of cells per stride, with this many anchors per cell, all of unit size.
ANCHOR_LAYERS = ((8, 2), (16, 6))
BOX_SCALE = 128.0  # the detector's raw offsets are in input pixels
SCORE_CLIP = 100.0  # raw scores are clipped to +-this before the sigmoid
MIN_SUPPRESSION_IOU = 0.3  # boxes overlapping the best one at least this much are merged into it
RIGHT_EYE, LEFT_EYE = 0, 1  # detector keypoints (the subject's eyes) that set the crop's rotation

MESH_SIZE = 192
ROI_SCALE = 1.5  # the mesh crop is the detector's box, squared on its longer side and grown by this
MESH_POINTS = 468


def model_path(name: str) -> Path:
    """A model file inside the installed ``mediapipe`` wheel (found without importing mediapipe, which loads
    matplotlib among others: cache keys are computed from these files' digests)."""
    spec = find_spec("mediapipe")
    if spec is None or spec.origin is None:
        raise FaceModelMissing(f"mediapipe is not installed: its wheel ships the face model {name}")
    return Path(spec.origin).parent / "modules" / name


def model_digests() -> dict[str, str]:
    """SHA-256 of both model files: part of the face features' identity."""
    return {f"{Path(name).stem}_model": file_sha256(model_path(name)) for name in (DETECTOR_MODEL, MESH_MODEL)}


def portable_interpreter(path: Path):
    """A LiteRT interpreter on the built-in kernels, without the XNNPACK delegate LiteRT applies by default."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter


@dataclass(frozen=True)
class Region:
    """A square region of the frame in pixels: its centre, side and rotation (radians, clockwise on screen)."""

    x: float
    y: float
    side: float
    angle: float


@dataclass(frozen=True)
class Detection:
    """A detected face in frame pixels: box centre and size, and the six keypoints (eyes, nose, mouth, ears)."""

    x: float
    y: float
    width: float
    height: float
    keypoints: np.ndarray  # (6, 2)

    def region(self) -> Region:
        """The mesh model's input region: the box squared on its longer side, grown, turned with the eyes."""
        (rx, ry), (lx, ly) = self.keypoints[RIGHT_EYE], self.keypoints[LEFT_EYE]
        angle = float(settle(math.atan2(ly - ry, lx - rx)))
        return Region(self.x, self.y, max(self.width, self.height) * ROI_SCALE, angle)


def _anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1], in the order of the detector's outputs (row, column, anchor)."""
    centres = []
    for stride, per_cell in ANCHOR_LAYERS:
        cells = DETECTOR_SIZE // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres)


class FaceMesh:
    """The detector and the mesh model, each on its own interpreter; ``landmarks`` describes one frame."""

    def __init__(self, min_score: float = 0.5) -> None:
        self._min_logit = math.log(min_score / (1 - min_score))  # the detection score a face needs, before the sigmoid
        self._detector = portable_interpreter(model_path(DETECTOR_MODEL))
        self._mesh = portable_interpreter(model_path(MESH_MODEL))
        self._anchors = _anchors()

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(468, 3) float64 points of the largest face in frame pixels (z in the x scale), or None without one."""
        faces = self.detect(frame)
        if not faces:
            return None
        largest = max(faces, key=lambda face: face.width * face.height)
        return self.mesh(frame, largest.region())

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Every face the detector finds, merged by weighted non-maximum suppression, in frame pixels."""
        height, width = frame.shape[:2]
        side = max(height, width)  # the frame sits in the middle of a square of this side
        scale = DETECTOR_SIZE / side
        inner = (max(round(width * scale), 1), max(round(height * scale), 1))
        small = cv2.resize(frame, inner, interpolation=cv2.INTER_AREA)
        top, left = (DETECTOR_SIZE - inner[1]) // 2, (DETECTOR_SIZE - inner[0]) // 2
        square = np.zeros((DETECTOR_SIZE, DETECTOR_SIZE, 3), np.uint8)
        square[top : top + inner[1], left : left + inner[0]] = small
        boxes, scores = _run(self._detector, square.astype(np.float32) / 127.5 - 1.0)
        boxes, logits = boxes.reshape(-1, 16).astype(np.float64), scores.reshape(-1).astype(np.float64)

        keep = np.flatnonzero(logits > self._min_logit)
        if not len(keep):
            return []
        raw, anchors = boxes[keep] / BOX_SCALE, self._anchors[keep]
        # Square pixels -> frame pixels: the resized frame starts at (left, top) in the square, scaled by `scale`.
        offset = np.array([left, top], np.float64)
        centres = ((raw[:, 0:2] + anchors) * DETECTOR_SIZE - offset) / scale
        sizes = raw[:, 2:4] * DETECTOR_SIZE / scale
        points = ((raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]) * DETECTOR_SIZE - offset) / scale
        weights = np.array([1 / (1 + math.exp(-min(max(x, -SCORE_CLIP), SCORE_CLIP))) for x in logits[keep]])
        return _merge(centres, sizes, points, weights)

    def mesh(self, frame: np.ndarray, region: Region) -> np.ndarray | None:
        """The 468 mesh points of the face in ``region`` (frame pixels), or None if the model sees no face."""
        crop, (to_frame, origin) = crop_region(frame, region, MESH_SIZE)
        points, presence = _run(self._mesh, crop.astype(np.float32) / 255.0)
        if float(presence.reshape(-1)[0]) <= 0.0:  # the presence logit: sigmoid <= 0.5
            return None
        local = points.reshape(MESH_POINTS, 3).astype(np.float64)
        x, y = local[:, 0], local[:, 1]
        frame_x = to_frame[0, 0] * x + to_frame[0, 1] * y + origin[0]
        frame_y = to_frame[1, 0] * x + to_frame[1, 1] * y + origin[1]
        return np.stack([frame_x, frame_y, local[:, 2] * (region.side / MESH_SIZE)], axis=1)


def turn(angle: float) -> tuple[float, float]:
    """cos and sin of ``angle`` (libm's double functions, the same on every CPU), rounded to the grid."""
    return float(settle(math.cos(angle))), float(settle(math.sin(angle)))


def crop_region(frame: np.ndarray, region: Region, size: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The ``size`` x ``size`` image of ``region`` (bilinear, edges repeated), and the affine map (matrix,
    origin) from crop coordinates to frame pixels, with OpenCV's convention that pixel centres are integers.

    The map is rounded to the grid before OpenCV sees it: warpAffine turns it into fixed-point steps, and a
    last-bit difference there could move a whole row of samples."""
    step = region.side / size
    cos, sin = turn(region.angle)
    matrix = settle(np.array([[cos * step, -sin * step], [sin * step, cos * step]]))
    half = size / 2 - 0.5  # the crop's centre in its own pixel coordinates
    origin = settle(
        np.array(
            [
                region.x - 0.5 - matrix[0, 0] * half - matrix[0, 1] * half,
                region.y - 0.5 - matrix[1, 0] * half - matrix[1, 1] * half,
            ]
        )
    )
    affine = np.concatenate([matrix, origin[:, None]], axis=1)
    crop = cv2.warpAffine(
        frame,
        affine,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # The mesh model's points are continuous coordinates (0 = the crop's left edge): shift by half a pixel.
    return crop, (matrix, origin + 0.5)


def _run(interpreter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image through a model with one input and two outputs."""
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
    interpreter.invoke()
    first, second = interpreter.get_output_details()
    return interpreter.get_tensor(first["index"]), interpreter.get_tensor(second["index"])


def _merge(centres: np.ndarray, sizes: np.ndarray, points: np.ndarray, scores: np.ndarray) -> list[Detection]:
    """Weighted non-maximum suppression: the best box and every box overlapping it by ``MIN_SUPPRESSION_IOU``
    become one detection, their score-weighted mean; repeated on what is left."""
    low, high = centres - sizes / 2, centres + sizes / 2
    remaining = list(np.argsort(-scores, kind="stable"))
    faces = []
    while remaining:
        best = remaining[0]
        overlap = np.maximum(0.0, np.minimum(high[remaining], high[best]) - np.maximum(low[remaining], low[best]))
        inter = overlap[:, 0] * overlap[:, 1]
        union = sizes[remaining, 0] * sizes[remaining, 1] + sizes[best, 0] * sizes[best, 1] - inter
        members = [i for i, shared in zip(remaining, inter / union) if shared >= MIN_SUPPRESSION_IOU]
        w = scores[members] / scores[members].sum()
        centre = settle((centres[members] * w[:, None]).sum(axis=0))
        size = settle((sizes[members] * w[:, None]).sum(axis=0))
        keypoints = settle((points[members] * w[:, None, None]).sum(axis=0))
        faces.append(Detection(float(centre[0]), float(centre[1]), float(size[0]), float(size[1]), keypoints))
        remaining = [i for i in remaining if i not in members]
    return faces

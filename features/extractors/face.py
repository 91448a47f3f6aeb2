"""Per-frame facial features: the interface every face backend implements, and what the backends share.

A backend turns sampled RGB frames into one fixed-length row per frame. Frames without a face get a row of
zeros and ``False`` in the mask, so the vision sequence keeps the frame timing and the model can tell
"no face" from "neutral face". Backends live in their own modules and are imported only when chosen: py-feat
pulls in torch and xgboost, which the MediaPipe backend does not need.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from features.errors import PipelineError

# The 7 basic emotions, in the order both backends report them (FER2013's and py-feat's class order).
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Head pose, in degrees, as both backends report it (py-feat's convention): pitch > 0 when the head tilts up,
# yaw > 0 when it turns towards the subject's right (image left in an unmirrored camera), roll > 0 when it
# leans towards the subject's right shoulder (counter-clockwise as seen in the image).
POSE_NAMES = ("head_pitch", "head_yaw", "head_roll")


class FaceModelMissing(PipelineError):
    """A model file a face backend needs is not on this machine (we never download at extraction time)."""


class FaceExtractor(Protocol):
    name: str  # e.g. "mediapipe-facemesh+fer" or "py-feat-detectorv1"
    version: str  # versions of the underlying packages and model files
    feature_names: list[str]  # ordered column names of the feature vector

    def extract(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames (N, H, W, 3) uint8 RGB -> features (N, d) float32 (zeros where no face), face mask (N,) bool.

        Where a frame holds several faces, the largest one is described.
        """
        ...

    def close(self) -> None: ...


def empty_result(n_frames: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """All-zero features and an all-False mask: what a backend returns for frames without faces."""
    return np.zeros((n_frames, n_features), np.float32), np.zeros(n_frames, bool)


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a (N, H, W, 3) uint8 RGB batch; returns it C-contiguous (MediaPipe and torch want that)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return np.ascontiguousarray(frames)

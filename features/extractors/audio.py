"""Acoustic features with openSMILE on an in-memory 16 kHz mono signal."""

from __future__ import annotations

from importlib.metadata import version as package_version

import numpy as np

from features.config import AudioConfig

# Bump when the features of the same signal and config change (a new post-processing step, say); a test
# (tests/features/test_identity.py) holds the digest of a real clip's features for this version.
FEATURE_VERSION = 2  # 2: computed with features.portable_math (the same bytes under any C library)

MIN_SAMPLES = 1600  # 0.1 s: below this openSMILE's LLD windows yield no frame

# Smile() names its own class through audobject, which looks the class' module up in
# importlib.metadata.packages_distributions(): a read of every installed distribution's file list, 1.5 s in this
# environment, once per process and again in each thread that races it. opensmile's answer is known (a test
# checks it against the scan), so the scan never runs for it; the features do not depend on the name.
OPENSMILE_DISTRIBUTIONS = ["opensmile"]


def _known_distributions() -> None:
    """What audobject would scan for, given (before the first Smile of the process)."""
    from audobject.core import utils as audobject_utils

    known = audobject_utils.PACKAGES_DISTRIBUTIONS  # typed a Mapping: replaced, not updated
    audobject_utils.PACKAGES_DISTRIBUTIONS = {"opensmile": OPENSMILE_DISTRIBUTIONS, **known}


def identity() -> dict[str, str]:
    """What computes the audio features besides their config: this code and openSMILE."""
    return {"code": str(FEATURE_VERSION), "opensmile": package_version("opensmile")}


class AudioExtractor:
    """openSMILE for one feature set and level; frames at a 10 ms hop for low-level descriptors."""

    name = "opensmile"
    version = package_version("opensmile")
    frame_rate = 100.0  # LLD frames per second (10 ms hop of the ComParE/GeMAPS configs)

    def __init__(self, config: AudioConfig):
        import opensmile  # here, not at the top: reading configs and cache keys needs none of it (0.6 s)

        _known_distributions()
        self.config = config
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[config.feature_set.value],
            feature_level=opensmile.FeatureLevel[config.feature_level.value],
        )
        self.feature_names: list[str] = list(self._smile.feature_names)

    def extract(self, signal: np.ndarray) -> np.ndarray:
        """(samples,) float32 at the configured rate -> (T, d) float32; (0, d) for a signal too short to frame."""
        if len(signal) < MIN_SAMPLES:
            return np.zeros((0, len(self.feature_names)), np.float32)
        frame = self._smile.process_signal(signal, self.config.sample_rate)
        return np.nan_to_num(frame.to_numpy(np.float32), nan=0.0, posinf=0.0, neginf=0.0)

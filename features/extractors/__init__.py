"""The feature extractors: openSMILE audio (``audio``), the BERT tokenizer (``text``) and the face backends
(``face`` is their interface; ``face_mediapipe`` the offline default, ``face_pyfeat`` py-feat)."""
from __future__ import annotations

from features.config import FaceBackend, FaceConfig
from features.extractors.face import FaceExtractor

__all__ = ["make_face_extractor", "FaceExtractor"]


def make_face_extractor(config: FaceConfig) -> FaceExtractor:
    """Build the extractor ``config.backend`` names; raises FaceModelMissing when its models are absent."""
    if FaceBackend(config.backend) is FaceBackend.PYFEAT:  # FaceBackend() rejects unknown names
        from features.extractors.face_pyfeat import PyFeatFaceExtractor

        return PyFeatFaceExtractor(config)
    from features.extractors.face_mediapipe import MediapipeFaceExtractor

    return MediapipeFaceExtractor(config)

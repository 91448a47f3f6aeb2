"""The feature extractors: openSMILE audio (``audio``), the BERT tokenizer (``text``) and the face backends
(``face`` is their interface; ``face_mediapipe`` the offline default, ``face_pyfeat`` py-feat)."""

from __future__ import annotations

from features import portable_math
from features.config import FaceBackend, FaceConfig
from features.extractors import audio
from features.extractors.face import FaceExtractor
from features.media import decoder_identity

__all__ = ["make_face_extractor", "FaceExtractor", "audio_identity", "face_identity"]


def make_face_extractor(config: FaceConfig) -> FaceExtractor:
    """Build the extractor ``config.backend`` names; raises FaceModelMissing when its models are absent."""
    if FaceBackend(config.backend) is FaceBackend.PYFEAT:  # FaceBackend() rejects unknown names
        from features.extractors.face_pyfeat import PyFeatFaceExtractor

        return PyFeatFaceExtractor(config)
    from features.extractors.face_mediapipe import MediapipeFaceExtractor

    return MediapipeFaceExtractor(config)


def platform_identity() -> dict[str, str]:
    """What audio and vision share: the decoder and the float maths the native libraries compute with."""
    return {**decoder_identity(), "float_maths": portable_math.identity()}


def audio_identity() -> dict[str, str]:
    """The decoder, the float maths and openSMILE: with the audio config, everything the audio features depend on."""
    return {**platform_identity(), **audio.identity()}


def face_identity(config: FaceConfig) -> dict[str, str]:
    """The decoder, the float maths and the face backend (code, libraries, model files), without loading it."""
    if FaceBackend(config.backend) is FaceBackend.PYFEAT:
        from features.extractors import face_pyfeat

        return {**platform_identity(), **face_pyfeat.identity(config)}
    from features.extractors import face_mediapipe

    return {**platform_identity(), **face_mediapipe.identity()}

"""The demo corpus' speech: espeak-ng, called in-process from the build pinned in requirements.lock.

The ``espeakng-loader`` wheel ships libespeak-ng 1.52.0 and its data, so the speech is the same on every machine
(Debian 12 and 13 ship other espeak-ng versions). espeak-ng keeps synthesis state in globals and seeds the breath
noise of its voice variants from the clock, so each sentence starts from a freshly loaded library with a fixed
noise seed (``_fresh_espeak``): a sentence sounds the same whatever was spoken before it, in any process.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from features.errors import PipelineError

SAMPLE_RATE = 22050  # espeak-ng's native rate: no resampling


@dataclass(frozen=True)
class Prosody:
    """espeak-ng SSML prosody, in percent: pitch relative to the voice, the others absolute."""

    pitch: float
    range: float
    rate: float
    volume: float


def prosody_for(audio: float, rng: np.random.Generator) -> Prosody:
    """Positive: higher, livelier, faster, louder; negative: low, flat, slow, soft; plus a little jitter so the
    audio label is not an exact function of any one of them."""
    j = rng.normal(0.0, 1.0, 4)
    return Prosody(
        pitch=25 * audio + 4 * j[0],
        range=max(10.0, 100 + 70 * audio + 8 * j[1]),
        rate=100 + 18 * audio + 5 * j[2],
        volume=min(140.0, 92 + 40 * audio + 5 * j[3]),
    )


class SpeechError(PipelineError):
    """espeak-ng is missing, does not know a voice, or failed to speak."""


# espeak-ng's C API (speak_lib.h, espeak_ng.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path instead of exit(1)
_POS_CHARACTER = 1
_CHARS_UTF8, _SSML = 0x01, 0x10  # no espeakENDPAUSE: no pause after the last sentence (the CLI's -z)
_RAND_SEED = 1  # the breath noise of the voice variants is random, seeded from the clock at initialisation
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_speech_lock = threading.Lock()  # espeak-ng is one global synthesiser per process
_speech_chunks: list[bytes] = []


@_SYNTH_CALLBACK
def _collect(wav, n_samples, _events) -> int:
    if wav and n_samples > 0:
        _speech_chunks.append(ctypes.string_at(wav, 2 * n_samples))
    return 0  # go on


@cache
def _espeak_paths() -> tuple[str, bytes]:
    """libespeak-ng and its voice data from the pinned ``espeakng-loader`` wheel, so every machine runs the
    same espeak-ng build on the same data."""
    try:
        import espeakng_loader
    except ImportError:
        raise SpeechError(
            "espeakng-loader is not installed (the demo corpus speaks with the espeak-ng it "
            "ships; it is in requirements.lock)"
        ) from None
    library = espeakng_loader.get_library_path()
    try:
        data = espeakng_loader.get_data_path()
    except RuntimeError as e:
        raise SpeechError(f"espeakng-loader has no espeak-ng data: {e}") from None
    if not Path(library).is_file():
        raise SpeechError(f"espeakng-loader has no espeak-ng library at {library}")
    return library, os.fsencode(data)


@contextmanager
def _fresh_espeak() -> Iterator[ctypes.CDLL]:
    """A freshly loaded and initialised libespeak-ng (synchronous output into ``_collect``), unloaded again
    afterwards. espeak-ng keeps synthesiser state (waveform phase, pitch, noise) in globals that neither a new
    sentence nor espeak_Terminate/espeak_Initialize reset, so reusing one library makes a sentence depend on
    the ones spoken before it, and with it the corpus on how clips fall to worker processes. Unloading it
    gives every sentence the state of a new process, as the espeak-ng command had; it costs a few ms."""
    library, data = _espeak_paths()
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        raise SpeechError(f"cannot load espeak-ng's library {library}: {e}") from None
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        if rate != SAMPLE_RATE:
            raise SpeechError(
                f"espeak-ng did not initialise with its data at {os.fsdecode(data)}: sample rate "
                f"{rate}, expected {SAMPLE_RATE} Hz"
            )
        lib.espeak_ng_SetRandSeed(_RAND_SEED)
        lib.espeak_SetSynthCallback(_collect)
        yield lib
    finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        del lib
    try:  # still loaded (another user in this process holds it): the next sentence would not start afresh
        held = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return
    _ctypes.dlclose(held._handle)
    raise SpeechError(
        f"{library} stays loaded in this process, so espeak-ng's state would carry over between "
        "sentences; the demo corpus needs it to itself"
    )


def espeak_info() -> tuple[str, str]:
    """The version of the espeak-ng library that speaks the corpus, and the data folder it reads."""
    with _speech_lock, _fresh_espeak() as lib:
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        data = ctypes.c_char_p()
        version = lib.espeak_Info(ctypes.byref(data))
        return version.decode(), os.fsdecode(data.value or b"")


def speak(text: str, voice: str, prosody: Prosody) -> np.ndarray:
    """The sentence spoken by espeak-ng: int16 mono at SAMPLE_RATE, without the final sentence pause. The same
    arguments give the same samples, whatever the process spoke before."""
    ssml = (
        f'<speak><prosody pitch="{prosody.pitch:+.0f}%" range="{prosody.range:.0f}%" '
        f'rate="{prosody.rate:.0f}%" volume="{prosody.volume:.0f}%">{escape(text)}</prosody></speak>'
    )
    text_bytes = ssml.encode("utf-8") + b"\0"
    _, variant = voice.split("+", 1) if "+" in voice else (voice, "")
    if variant and not (Path(os.fsdecode(_espeak_paths()[1])) / "voices" / "!v" / variant).is_file():
        raise SpeechError(f"espeak-ng has no voice variant {variant!r} (in {voice!r})")  # it would speak without
    with _speech_lock:
        _speech_chunks.clear()
        try:
            with _fresh_espeak() as lib:
                if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
                    raise SpeechError(f"espeak-ng has no voice {voice!r}")
                status = lib.espeak_Synth(
                    text_bytes, len(text_bytes), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _SSML, None, None
                )
                if status == 0:
                    status = lib.espeak_Synchronize()
            samples = b"".join(_speech_chunks)
        finally:
            _speech_chunks.clear()
    if status != 0:
        raise SpeechError(f"espeak-ng failed to speak {text!r} with voice {voice!r} (status {status})")
    if not samples:
        raise SpeechError(f"espeak-ng said nothing for {text!r} with voice {voice!r}")
    return np.frombuffer(samples, np.int16)

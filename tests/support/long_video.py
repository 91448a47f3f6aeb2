"""A long video with subtitles made of the real MOSI clips: each clip trimmed to whole steps of the face sampler,
written one after another into one file and each also on its own, both losslessly (FFV1 video, 16 kHz PCM
audio), so a segment of the long video decodes to exactly the frames and samples of its clip alone."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import webvtt

FPS = 30  # the MOSI clips' frame rate
RATE = 16000
STEP_FRAMES = 6  # 0.2 s: a whole number of the face sampler's steps at 5 and 10 frames/s


@dataclass(frozen=True)
class Part:
    name: str
    alone: Path  # the clip on its own, encoded as in the long video
    start: float  # seconds in the long video
    end: float
    text: str


@dataclass(frozen=True)
class LongVideo:
    path: Path
    subtitles: Path  # SRT: one cue per part, its transcript
    parts: list[Part]


def read_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Every video frame (RGB) and the audio as 16 kHz mono int16, trimmed to a whole number of sampler steps."""
    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams.video, *container.streams.audio):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            elif isinstance(frame, av.AudioFrame):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    frames = frames[: len(frames) // STEP_FRAMES * STEP_FRAMES]
    samples = len(frames) * RATE // FPS
    audio = np.concatenate(chunks)[:samples]
    return frames, np.pad(audio, (0, samples - len(audio)))


def write_lossless(path: Path, frames: list[np.ndarray], audio: np.ndarray) -> Path:
    """Matroska with FFV1 video at 30 frames/s and PCM audio: decoded, the same pixels and samples every time."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("ffv1", rate=FPS)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv444p"
        sound = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, start : start + 1024], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def make_long_video(folder: Path, clips: dict[str, tuple[Path, str]]) -> LongVideo:
    """The clips (name -> (media, transcript)) end to end in ``folder``/long.mkv, each alone as <name>.mkv too,
    and long.srt with one cue per clip."""
    folder.mkdir(parents=True, exist_ok=True)
    all_frames: list[np.ndarray] = []
    all_audio: list[np.ndarray] = []
    parts = []
    for name, (media, text) in clips.items():
        frames, audio = read_clip(media)
        start = len(all_frames) / FPS
        all_frames += frames
        all_audio.append(audio)
        alone = write_lossless(folder / f"{name}.mkv", frames, audio)
        parts.append(Part(name, alone, round(start, 3), round(len(all_frames) / FPS, 3), text))
    path = write_lossless(folder / "long.mkv", all_frames, np.concatenate(all_audio))
    subtitles = folder / "long.srt"
    captions = [webvtt.Caption(_stamp(p.start), _stamp(p.end), p.text) for p in parts]
    webvtt.WebVTT(captions=captions).save_as_srt(str(subtitles))
    return LongVideo(path, subtitles, parts)


def _stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

"""Decode a media file once, in memory: 16 kHz mono audio plus video frames sampled at a fixed rate.

PyAV's wheel bundles FFmpeg, so nothing else is needed. Frames can be handed to a sink in batches as they are
decoded (long source videos never sit in memory whole), or kept and returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.error  # loaded by ``import av`` too; named so the checker sees the submodule
import cv2
import numpy as np

from features.errors import PipelineError

FrameSink = Callable[[np.ndarray, np.ndarray], None]  # (frame times (n,), frames (n, H, W, 3) uint8 RGB)

# Bump when decode() gives other samples or frames for the same file and settings: every shard is re-made.
DECODER_VERSION = 1


def decoder_identity() -> dict[str, str]:
    """What decodes the media (part of the audio and vision identities): this code, PyAV and its FFmpeg."""
    return {
        "decoder": str(DECODER_VERSION),
        "av": av.__version__,
        "ffmpeg": str(av.ffmpeg_version_info),
        "opencv": cv2.__version__,
    }


class MediaError(PipelineError):
    """A media file that cannot be decoded (missing, corrupt, truncated, no streams)."""


@dataclass
class Media:
    """What one decode pass yields."""

    path: Path
    audio: np.ndarray  # (samples,) float32 in [-1, 1], mono; empty when the file has no audio stream
    sample_rate: int
    frame_times: np.ndarray  # (N,) seconds of each sampled frame
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB; empty when frames went to a sink or there is no video
    duration: float  # seconds, the longer of the audio and video streams
    has_audio: bool
    has_video: bool


def decode(
    path: str | Path,
    fps: float = 10.0,
    max_side: int = 640,
    sample_rate: int = 16000,
    frame_sink: FrameSink | None = None,
    batch: int = 32,
    audio: bool = True,
    video: bool = True,
) -> Media:
    """Decode audio (resampled to ``sample_rate`` mono) and frames sampled every ``1/fps`` seconds.

    A frame is taken at the first decoded frame whose timestamp reaches each sampling instant ``k / fps``.
    Frames are downscaled so their longer side is at most ``max_side``. ``audio=False`` or ``video=False`` skips
    decoding that stream (its cached features are already known); the result then reports it as absent.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such media file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open media ({err})") from None
    with container:
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        video_stream = container.streams.video[0] if container.streams.video else None
        if audio_stream is None and video_stream is None:
            raise MediaError(f"{path}: no audio or video stream")
        audio_stream = audio_stream if audio else None
        video_stream = video_stream if video else None
        if video_stream is not None:
            video_stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        sampler = _FrameSampler(fps, max_side, frame_sink, batch)
        streams = [s for s in (audio_stream, video_stream) if s is not None]
        try:
            # no stream left (only audio asked for, and the file has none): nothing decoded, has_audio False
            for frame in container.decode(*streams) if streams else ():
                if isinstance(frame, av.AudioFrame):
                    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
                else:
                    sampler.offer(cast(av.VideoFrame, frame))  # only audio and video streams are decoded
            if audio_stream is not None:
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: corrupt or truncated media ({err})") from None
        sampler.flush()
    samples = np.clip(np.concatenate(chunks), -1, 1).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if video_stream is not None and not sampler.times:
        raise MediaError(f"{path}: video stream holds no decodable frame")
    duration = max(len(samples) / sample_rate, sampler.last_time)
    return Media(
        path=path,
        audio=samples,
        sample_rate=sample_rate,
        frame_times=np.array(sampler.times, np.float64),
        frames=sampler.kept(),
        duration=duration,
        has_audio=audio_stream is not None,
        has_video=video_stream is not None,
    )


class _FrameSampler:
    """Picks frames at a fixed rate from a decoded stream, resizes them, batches them to a sink."""

    def __init__(self, fps: float, max_side: int, sink: FrameSink | None, batch: int):
        self.step = 1.0 / fps
        self.max_side = max_side
        self.sink = sink
        self.batch = batch
        self.next_time = 0.0
        self.last_time = 0.0
        self.times: list[float] = []
        self._pending: list[np.ndarray] = []
        self._pending_times: list[float] = []
        self._kept: list[np.ndarray] = []

    def offer(self, frame: av.VideoFrame) -> None:
        t = float(frame.time) if frame.time is not None else self.next_time
        self.last_time = max(self.last_time, t + self.step)
        if t + 1e-6 < self.next_time:
            return
        self.next_time = (np.floor(t / self.step + 1e-6) + 1) * self.step
        image = frame.to_ndarray(format="rgb24")
        scale = self.max_side / max(image.shape[:2])
        if scale < 1:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        self.times.append(t)
        self._pending.append(image)
        self._pending_times.append(t)
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        if self.sink is None:
            self._kept.extend(self._pending)
        else:
            self.sink(np.array(self._pending_times), np.stack(self._pending))
        self._pending, self._pending_times = [], []

    def kept(self) -> np.ndarray:
        return np.stack(self._kept) if self._kept else np.zeros((0, 0, 0, 3), np.uint8)


def media_duration(path: str | Path) -> float:
    """The length of a media file in seconds from its container's header (the longest stream), without decoding:
    what decides whether a subtitle cue lies past the end, or an upload is too long to score in a request."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            lengths = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
            if container.duration:
                lengths.append(container.duration / av.time_base)
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open media ({err})") from None
    except FileNotFoundError:
        raise MediaError(f"{path}: no such media file") from None
    if not lengths:
        raise MediaError(f"{path}: its container states no duration")
    return max(lengths)

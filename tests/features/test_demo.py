"""The demo corpus: deterministic, in MMSA layout, and its media carry the labels they claim to.

Media checks run the real tools (espeak-ng from espeakng-loader, x264/AAC through PyAV, MediaPipe Face Mesh) on a
handful of clips.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from features.datasets.demo.corpus import (
    EYE_CORNERS,
    LABEL_COLUMNS,
    LABEL_WEIGHTS,
    LIP_CENTRE,
    MOUTH_CORNERS,
    SPEAKERS,
    draw_labels,
    express,
    face_landmarks,
    face_rig,
    make_demo_corpus,
    measure_face,
    plan_corpus,
    render_clip,
)
from features.datasets.demo.faces import FACES
from features.datasets.demo.phrases import SUBJECTS, templates_for
from features.datasets.demo.speech import SAMPLE_RATE, Prosody, SpeechError, espeak_info, speak
from features.datasets.mmsa_layout import load_mmsa
from features.types import SPLITS, check_id

CLIPS, PER_VIDEO, SEED = 6, 2, 7

# Another x86-64 CPU, as the pinned wheels see it: the OpenBLAS kernels numpy's OpenBLAS falls back to on a CPU
# it does not know (Zen 5), and the AVX2 paths of numpy and OpenCV where this one may take AVX-512 ones.
OTHER_CPU = {
    "OPENBLAS_CORETYPE": "Prescott",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
    "OPENCV_CPU_DISABLE": "AVX512_SKX",
}
# Clips whose mp4s came out other on a Zen 3 than on a Zen 4 when x264 ran with CRF (clip 0 did not), and which
# differ between x264's AVX-512 and SSE4.2 code under CRF here on a Zen 4.
SENSITIVE_CLIPS = (0, 52, 118, 244)
# FFmpeg has no such variable: the same CPU's flags through av_force_cpu_flags, less AVX-512 (0x100000 and
# 0x200000) and with the slow-gather flag (0x2000000) flipped, which FFmpeg sets for Zen 4 and not for Zen 5.
# x264 detects its own: its ``asm`` parameter forces SSE4.2, which every CPU with AVX2 runs and none takes itself.
RENDER_ELSEWHERE = f"""
import ctypes, json, sys
from pathlib import Path
import av
avutil = ctypes.CDLL(str(next((Path(av.__file__).parent.parent / "av.libs").glob("libavutil-*.so*"))))
avutil.av_force_cpu_flags((avutil.av_get_cpu_flags() & ~0x300000) ^ 0x2000000)
from features.datasets.demo import corpus
corpus.X264_OPTIONS["x264-params"] = "asm=SSE4.2"
plans = corpus.plan_corpus(300, seed=0)
for k in {SENSITIVE_CLIPS}:
    corpus.render_clip(plans[k], Path(sys.argv[1]) / f"{{k}}.mp4")
print(json.dumps([p.row() for p in plans]))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_demo_corpus(
        tmp_path_factory.mktemp("demo") / "demo", clips=CLIPS, seed=SEED, clips_per_video=PER_VIDEO, workers=1
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    """RGB frames, mono float audio in [-1, 1] and the video frame rate of an mp4."""
    with av.open(str(path)) as box:
        rate = box.streams.video[0].average_rate
        assert rate is not None
        fps = float(rate)
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    with av.open(str(path)) as box:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        audio = np.concatenate([r.to_ndarray().ravel() for f in box.decode(audio=0) for r in resampler.resample(f)])
    return frames, audio, fps


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _median_f0(x: np.ndarray) -> float:
    """Median pitch of the voiced 40 ms frames, by autocorrelation (enough to compare two voices)."""
    size, hop = int(0.04 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
    low, high = SAMPLE_RATE // 500, SAMPLE_RATE // 60
    f0 = []
    for start in range(0, len(x) - size, hop):
        frame = x[start : start + size] - x[start : start + size].mean()
        if _rms(frame) < 0.2 * _rms(x):
            continue
        ac = np.correlate(frame, frame, "full")[size - 1 :]
        lag = low + int(np.argmax(ac[low:high]))
        if ac[lag] > 0.4 * ac[0]:
            f0.append(SAMPLE_RATE / lag)
    return float(np.median(f0))


def _smile(image: np.ndarray) -> float:
    """How far the mouth corners sit above the lip centre, in eye-corner distances."""
    marks = face_landmarks(image)
    assert marks is not None, "MediaPipe found no face"
    unit = np.linalg.norm(marks[EYE_CORNERS[0]] - marks[EYE_CORNERS[1]])
    return float((marks[list(LIP_CENTRE), 1].mean() - marks[list(MOUTH_CORNERS), 1].mean()) / unit)


def _plan(**labels: float):
    """One clip of the first speaker saying a fixed sentence, with the given labels."""
    plan = replace(plan_corpus(1, seed=0)[0], speaker=SPEAKERS[0], text="I think the movie was quite good.")
    return replace(plan, labels=replace(plan.labels, **labels))


def test_same_seed_same_bytes(corpus, tmp_path):
    again = make_demo_corpus(tmp_path / "again", clips=CLIPS, seed=SEED, clips_per_video=PER_VIDEO, workers=2)
    assert _digests(again) == _digests(corpus)
    other = plan_corpus(CLIPS, seed=SEED + 1, clips_per_video=PER_VIDEO)
    assert [p.row() for p in other] != [p.row() for p in plan_corpus(CLIPS, SEED, PER_VIDEO)]


def test_bytes_do_not_depend_on_the_cpu(tmp_path):
    """dvc.lock pins the corpus' hash for every x86-64 CPU with AVX2: the labels of a whole corpus and the mp4s of
    the clips most sensitive to it, rendered with another CPU's dispatch (in a subprocess), are byte-identical
    to this one's."""
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    elsewhere.mkdir()
    here.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", RENDER_ELSEWHERE, str(elsewhere)],
        env={**os.environ, **OTHER_CPU, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plans = plan_corpus(300, seed=0)
    assert json.loads(done.stdout) == [p.row() for p in plans]
    for k in SENSITIVE_CLIPS:
        render_clip(plans[k], here / f"{k}.mp4")
        assert (elsewhere / f"{k}.mp4").read_bytes() == (here / f"{k}.mp4").read_bytes(), f"clip {k}"


def test_face_table_matches_face_mesh():
    """The committed crops and landmarks are still what Face Mesh finds in the photos, within a pixel or so."""
    for speaker in SPEAKERS:
        measured, table = measure_face(speaker.photo), FACES[speaker.photo]
        assert np.abs(np.subtract(measured.crop, table.crop)).max() <= 2, speaker.name
        assert measured.points.keys() == table.points.keys()
        gap = max(np.abs(np.subtract(measured.points[k], table.points[k])).max() for k in table.points)
        assert gap < 0.005, f"{speaker.name}: landmarks {gap:.4f} of the crop away from faces.FACES"


def test_refuses_to_write_over_a_corpus(corpus):
    with pytest.raises(FileExistsError):
        make_demo_corpus(corpus, clips=1)


def test_layout_labels_and_splits(corpus):
    with open(corpus / "label.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames is not None and tuple(reader.fieldnames) == LABEL_COLUMNS
        rows = list(reader)
    assert len(rows) == CLIPS
    for row in rows:
        check_id(row["video_id"], "video_id")
        check_id(row["clip_id"], "clip_id")
        values = [float(row[c]) for c in ("label", "label_T", "label_A", "label_V")]
        assert all(-1.0 <= v <= 1.0 for v in values)
        label = values[0]
        assert row["annotation"] == ("Negative" if label < 0 else "Positive" if label > 0 else "Neutral")
        assert row["text"] in {
            t.format(s=s, S=s[0].upper() + s[1:]) for t in templates_for(values[1]) for s in SUBJECTS
        }
    assert {r["mode"] for r in rows} == set(SPLITS)
    for video in {r["video_id"] for r in rows}:  # a video never straddles splits
        assert len({r["mode"] for r in rows if r["video_id"] == video}) == 1
    spec = load_mmsa(corpus)
    assert not spec.rejected and len(spec.clips) == CLIPS


def test_media_decode_to_face_video_and_speech(corpus):
    for mp4 in sorted((corpus / "Raw").glob("*/*.mp4")):
        frames, audio, fps = _decode(mp4)
        assert 15 <= fps <= 30
        assert 2.0 <= len(frames) / fps <= 4.0
        assert 2.0 <= len(audio) / SAMPLE_RATE <= 4.1  # AAC pads its last frame
        assert abs(len(audio) / SAMPLE_RATE - len(frames) / fps) < 0.1
        assert _rms(audio) > 0.01, f"{mp4} is silent"
        assert frames[0].shape[:2] == (256, 256)
        assert face_landmarks(frames[len(frames) // 2]) is not None


def test_positive_audio_is_louder_and_higher(tmp_path):
    decoded = {}
    for audio in (-1.0, 1.0):
        path = tmp_path / f"a{audio:+.0f}.mp4"
        render_clip(_plan(audio=audio, vision=0.0), path)
        decoded[audio] = _decode(path)[1]
    assert _rms(decoded[1.0]) > 1.8 * _rms(decoded[-1.0])
    assert _median_f0(decoded[1.0]) > 1.3 * _median_f0(decoded[-1.0])


def test_speech_comes_from_the_pinned_espeak_ng():
    import espeakng_loader

    version, data = espeak_info()
    assert version == "1.52.0"
    assert Path(data).resolve() == Path(espeakng_loader.get_data_path()).resolve()


def test_speech_does_not_depend_on_what_was_said_before():
    """espeak-ng keeps waveform state and a clock-seeded noise generator in globals: each sentence must start
    afresh, or a clip would depend on the clips its worker process rendered before it."""
    lively, flat = Prosody(10, 120, 105, 100), Prosody(-20, 40, 85, 70)
    text = "I think the movie was quite good."
    for voice in {s.voice for s in SPEAKERS}:
        first = speak(text, voice, lively)
        assert first.dtype == np.int16 and 1.0 < len(first) / SAMPLE_RATE < 4.0
        speak("What a terrible, boring plot!", voice, flat)
        assert np.array_equal(speak(text, voice, lively), first), voice


def test_unknown_voices_are_errors():
    for voice in ("xx-nonexistent", "en+nosuchvariant"):
        with pytest.raises(SpeechError, match="no voice"):
            speak("Hello.", voice, Prosody(0, 100, 100, 100))


def test_expression_warp_moves_mouth_corners_monotonically():
    strengths = (-1.0, -0.5, 0.0, 0.5, 1.0)
    for speaker in SPEAKERS:
        rig = face_rig(speaker.photo, 256)
        smiles = [_smile(express(rig, v)) for v in strengths]
        assert np.all(np.diff(smiles) > 0), f"{speaker.name}: {smiles}"


def test_vision_label_survives_head_motion_and_encoding(tmp_path):
    smiles = []
    for vision in (-1.0, 0.0, 1.0):
        path = tmp_path / f"v{vision:+.0f}.mp4"
        render_clip(_plan(vision=vision), path)
        frames, _, fps = _decode(path)
        smiles.append(np.median([_smile(f) for f in frames[int(fps) :: 3]]))  # after the expression has built up
    assert smiles[0] < smiles[1] < smiles[2], smiles


def test_labels_are_consistent_and_modalities_sometimes_disagree():
    labels = [draw_labels(np.random.default_rng([3, i])) for i in range(1000)]
    table = np.array([(lab.text, lab.audio, lab.vision, lab.multimodal) for lab in labels])
    assert np.all(np.abs(table) <= 1.0)
    assert np.allclose(table * 10, np.round(table * 10))
    mean = table[:, :3] @ np.array(LABEL_WEIGHTS) / sum(LABEL_WEIGHTS)
    assert np.all(np.abs(table[:, 3] - mean) <= 0.05 + 1e-9)
    opposed = (table[:, :3].max(1) >= 0.3) & (table[:, :3].min(1) <= -0.3)
    assert 0.1 < opposed.mean() < 0.4
    for k in range(3):  # each modality is, at times, the one against the other two
        others = np.delete(table[:, :3], k, axis=1)
        against = (np.sign(table[:, k]) * np.sign(others).sum(1) == -2) & (np.abs(table[:, k]) >= 0.3)
        assert against.sum() > 20
    assert {lab.annotation for lab in labels} == {"Negative", "Neutral", "Positive"}


def test_plan_is_prefix_stable_and_varied():
    big = plan_corpus(300, seed=0)
    small = plan_corpus(12, seed=0)
    assert [(p.text, p.labels) for p in small] == [(p.text, p.labels) for p in big[:12]]
    assert len({p.text for p in big}) > 250
    assert len({p.video_id for p in big}) == 30
    assert {p.speaker for p in big} == set(SPEAKERS)
    modes = [p.mode for p in big]
    assert 0.6 < modes.count("train") / 300 < 0.8

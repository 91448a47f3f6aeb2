import numpy as np
import pytest

from features.media import MediaError, decode
from tests.support.data import FEAT_DATA, MOSI_MEDIA, real_frames, speech_like, write_video


@pytest.mark.shared_data
def test_real_mosi_clip_decodes_to_16k_mono_and_sampled_frames():
    media = decode(MOSI_MEDIA / "0h-zjBukYpk_2.mp4", fps=10, max_side=320)
    assert media.has_audio and media.has_video and media.sample_rate == 16000
    assert media.audio.dtype == np.float32 and abs(len(media.audio) / 16000 - 12.3) < 0.2
    assert media.frames.shape[1:] == (240, 320, 3)  # 480x360 scaled to a longer side of 320
    assert abs(len(media.frame_times) - 10 * 12.3) <= 2
    assert np.all(np.diff(media.frame_times) > 0.05)
    assert 0 < np.abs(media.audio).max() <= 1.0


@pytest.mark.shared_data
def test_wav_clip_is_audio_only():
    media = decode(MOSI_MEDIA / "03bSnISJMiM_1.wav")
    assert media.has_audio and not media.has_video and len(media.frames) == 0
    assert abs(media.duration - 3.33) < 0.05


def test_frames_can_stream_to_a_sink_in_batches():
    seen = []
    media = decode(FEAT_DATA / "no_face.mp4", fps=5, frame_sink=lambda t, f: seen.append((t, f)), batch=4)
    assert len(media.frames) == 0
    assert sum(len(t) for t, _ in seen) == len(media.frame_times) >= 15
    assert max(len(t) for t, _ in seen) == 4


def test_skipping_a_stream_does_not_decode_it(tmp_path):
    path = write_video(tmp_path / "v.mp4", real_frames(20), 10, speech_like(2.0))
    only_audio = decode(path, video=False)
    assert len(only_audio.frame_times) == 0 and len(only_audio.audio) > 16000
    only_video = decode(path, audio=False)
    assert len(only_video.audio) == 0 and len(only_video.frame_times) == 20


def test_video_without_audio_stream(tmp_path):
    media = decode(write_video(tmp_path / "mute.mp4", real_frames(10), 10))
    assert not media.has_audio and len(media.audio) == 0 and len(media.frame_times) == 10


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing"])
def test_broken_media_raise_a_media_error_naming_the_file(tmp_path, damage):
    good = write_video(tmp_path / "good.mp4", real_frames(20), 10, speech_like(2.0))
    bad = tmp_path / "bad.mp4"
    if damage == "garbage":
        bad.write_bytes(b"this is not a video" * 100)
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:2000])
    elif damage == "empty":
        bad.write_bytes(b"")
    with pytest.raises(MediaError, match="bad.mp4"):
        decode(bad)

"""Sentiment over time: a long real video with subtitles, scored segment by segment through the same path as a
dataset clip. The key check: each segment's scores are those of its clip scored alone, and cuts one frame off are
seen."""

import csv
import json
import math
from pathlib import Path

import pytest

from features.cache import ShardCache
from flows.cli import main
from selfmm.batch import SCORE_NAMES, extraction_config
from selfmm.bundle import load_bundle
from selfmm.predict import Predictor
from selfmm.timeline import Cue, SubtitleError, merge_short_cues, predict_timeline, read_subtitles
from tests.support.long_video import FPS

TOLERANCE = 1e-4  # float noise: the segments are scored in one padded batch, the clips alone


def scores(row: dict) -> list[float]:
    return [float(row[name]) for name in SCORE_NAMES.values()]


def test_each_segment_equals_its_clip_scored_alone_and_a_cut_one_frame_off_is_seen(
    real_models, long_mosi_video, tmp_path, capsys
):
    model, cache = ["--model", str(real_models.first)], ["--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "timeline"
    args = ["predict", str(long_mosi_video.path), "--subtitles", str(long_mosi_video.subtitles), "--out", str(out)]
    assert main([*args, *model, *cache]) == 0
    assert "3 segments" in capsys.readouterr().out
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["start"]), float(r["end"]), r["text"]) for r in rows] == [
        (p.start, p.end, p.text) for p in long_mosi_video.parts
    ]
    for row, part in zip(rows, long_mosi_video.parts, strict=True):
        assert row["error"] == ""
        assert main(["predict", str(part.alone), *model, *cache, "--text", part.text, "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert scores(row) == pytest.approx([alone[n] for n in SCORE_NAMES.values()], abs=TOLERANCE)
        assert row["face_frames"] == alone["face_frames"]

    # the same cues one frame late: other frames and samples, other scores
    bundle = load_bundle(real_models.first)
    late = [Cue(c.start + 1 / FPS, c.end + 1 / FPS, c.text) for c in read_subtitles(long_mosi_video.subtitles)]
    shifted = predict_timeline(
        Predictor(bundle), long_mosi_video.path, late, extraction_config(bundle), ShardCache(tmp_path / "cache")
    )
    for row, segment in zip(rows, shifted, strict=True):
        moved = [getattr(segment, name) for name in SCORE_NAMES.values()]
        assert max(abs(a - b) for a, b in zip(scores(row), moved, strict=True)) > 10 * TOLERANCE


def test_the_timeline_files_are_offline_and_a_cue_past_the_end_is_a_row_with_its_error(
    real_models, long_mosi_video, tmp_path, capsys
):
    subtitles = tmp_path / "talk.vtt"
    subtitles.write_text(
        "WEBVTT\n\n00:00.000 --> 00:02.400\nnow the <b>title</b> of the movie\n\n"
        "00:02.400 --> 00:14.600\nit is a bad movie\n\n01:00.000 --> 01:05.000\nafter the end\n"
    )
    out = tmp_path / "out"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    args = ["predict", str(long_mosi_video.path), "--subtitles", str(subtitles), "--model", str(real_models.first)]
    assert main([*args, *cache, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["segments"] == 3 and result["failed"] == 1
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["text"] == "now the title of the movie"  # markup stripped
    assert rows[2]["error"] == "cue starts at 60.000 s, after the end of the media (22.000 s)"
    assert rows[2]["sentiment"] == "" and rows[1]["error"] == ""
    page = (out / "timeline.html").read_text()
    assert "it is a bad movie" in page and "<svg" in page and "after the end of the media" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from anywhere
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_srt_and_webvtt_give_the_same_cues_and_short_cues_are_joined(tmp_path):
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:01,500\nhi\n\n2\n00:00:01,500 --> 00:00:04,000\nthere <i>you</i>\n")
    vtt = tmp_path / "a.vtt"
    vtt.write_text("WEBVTT\n\n00:01.000 --> 00:01.500\nhi\n\n00:01.500 --> 00:04.000\nthere <i>you</i>\n")
    cues = read_subtitles(srt)
    assert cues == read_subtitles(vtt) == [Cue(1.0, 1.5, "hi"), Cue(1.5, 4.0, "there you")]
    assert merge_short_cues(cues, 2.0) == [Cue(1.0, 4.0, "hi there you")]
    assert merge_short_cues(cues, 0.5) == cues
    assert merge_short_cues([Cue(0, 3, "a"), Cue(3, 3.5, "b")], 2.0) == [Cue(0, 3.5, "a b")]  # the last: backwards


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.srt", "this is not\na subtitles file\n", "not readable as SRT"),
        ("bad.vtt", "WEBVTT\n\n00:05.000 --> 00:04.000\nbackwards\n", "ends at 4.000 s, not after"),
        ("talk.txt", "hello", "not a subtitles file"),
    ],
)
def test_a_bad_subtitles_file_is_an_error_that_names_it(real_models, tmp_path, capsys, name, content, problem):
    subtitles = tmp_path / name
    subtitles.write_text(content)
    with pytest.raises(SubtitleError, match=problem):
        read_subtitles(subtitles)
    args = ["predict", str(real_models.short_clip), "--subtitles", str(subtitles), "--model", str(real_models.first)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(subtitles) in err and problem in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_without_subtitles_a_file_is_scored_whole_as_before(real_models, tmp_path, capsys):
    args = ["predict", str(real_models.short_clip), "--model", str(real_models.first), "--json"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(math.isfinite(result[name]) for name in SCORE_NAMES.values()) and "segments" not in result


def test_a_missing_media_file_with_subtitles_is_an_error(real_models, tmp_path, capsys):
    subtitles = tmp_path / "a.srt"
    subtitles.write_text("1\n00:00:01,000 --> 00:00:03,000\nhi\n")
    args = ["predict", str(tmp_path / "none.mp4"), "--subtitles", str(subtitles), "--model", str(real_models.first)]
    assert main(args) == 1
    assert "none.mp4" in capsys.readouterr().err


def test_the_subtitles_of_a_folder_are_refused(real_models, tmp_path, capsys):
    subtitles = tmp_path / "a.srt"
    subtitles.write_text("1\n00:00:01,000 --> 00:00:03,000\nhi\n")
    args = ["predict", str(tmp_path), "--subtitles", str(subtitles), "--model", str(real_models.first)]
    assert main(args) == 1
    assert "goes with one media file" in capsys.readouterr().err


def test_long_mosi_video_parts_are_whole_sampler_steps(long_mosi_video):
    for part in long_mosi_video.parts:
        assert Path(part.alone).is_file()
        assert round(part.start * 5, 6) == round(part.start * 5) and round(part.end * 5, 6) == round(part.end * 5)

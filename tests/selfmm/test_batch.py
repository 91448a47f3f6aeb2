"""Batch prediction: a folder of media or a dataset folder -> predictions.csv, one row per clip, through the shard
cache; a clip that cannot be used is a row with its error."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from features.cache import ShardCache
from flows.cli import main
from selfmm.batch import COLUMNS, SCORE_NAMES, extraction_config, find_inputs, predict_inputs
from selfmm.bundle import load_bundle
from selfmm.predict import Predictor
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA, write_label_csv
from tests.support.model_service import talking_face


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_a_folder_of_media_gives_a_row_per_file_and_a_failure_is_a_row(real_models, tmp_path, capsys):
    folder = tmp_path / "incoming"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(MOSI_MEDIA / "0h-zjBukYpk_2.mp4", folder / "bad.mp4")
    (folder / "bad.mp4.txt").write_text(MOSI_CLIPS["0h-zjBukYpk_2"][0])
    shutil.copy(real_models.short_clip, folder / "day2" / "face.mp4")
    talking_face(folder / "day2" / "mute.mp4", audio=False)
    (folder / "notes.mp4").write_bytes(b"not a video")
    out = tmp_path / "predictions.csv"
    cache = tmp_path / "cache"
    args = ["predict", str(folder), "--model", str(real_models.first), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    rows = {r["clip"]: r for r in read_rows(out)}
    assert list(rows) == ["bad.mp4", "day2/face.mp4", "day2/mute.mp4", "notes.mp4"]
    for name in ("bad.mp4", "day2/face.mp4"):
        assert rows[name]["error"] == "" and all(math.isfinite(float(rows[name][k])) for k in SCORE_NAMES.values())
    assert rows["day2/face.mp4"]["face_frames"] == "10/10"  # a face in every frame, 2 s at 5 frames/s
    assert rows["day2/mute.mp4"]["error"] == "audio: no audio stream" and rows["day2/mute.mp4"]["sentiment"] == ""
    assert rows["notes.mp4"]["error"].startswith("decode: ") and "cannot open media" in rows["notes.mp4"]["error"]
    assert '"predicted": 2' in capsys.readouterr().out

    # Again: every usable file is a cache hit (no new shard), and the rows are the same.
    shards = sorted(p for p in cache.rglob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert main(args) == 0
    assert sorted(cache.rglob("*.npz")) == shards and [p.stat().st_mtime_ns for p in shards] == stamps
    assert {r["clip"]: r for r in read_rows(out)} == rows


def test_a_dataset_folder_uses_its_clip_ids_and_transcripts_and_reports_its_rejected_rows(real_models, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(real_models.data, data)
    with open(data / "label.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows.append({"video_id": "../up", "clip_id": "1", "text": "x", "label": "0.5", "mode": "test"})
    write_label_csv(data, rows)
    bundle = load_bundle(real_models.first)
    inputs = find_inputs(data)
    assert len(inputs) == 9
    # the same shard cache the training features went through: nothing is extracted again
    before = sorted(real_models.cache.rglob("*.npz"))
    out = predict_inputs(Predictor(bundle), inputs, extraction_config(bundle), ShardCache(real_models.cache))
    assert sorted(real_models.cache.rglob("*.npz")) == before
    assert [r.clip for r in out[:3]] == ["0h-zjBukYpk/1", "0h-zjBukYpk/2", "Oz06ZWiO20M/6"]
    assert all(not r.error and math.isfinite(r.sentiment) for r in out[:8])
    assert out[8].clip == "../up/1" and out[8].error.startswith("labels: ") and "unsafe video_id" in out[8].error


def test_one_file_prints_its_scores(real_models, tmp_path, capsys):
    model, cache = ["--model", str(real_models.first)], ["--cache-dir", str(tmp_path / "cache")]
    assert main(["predict", str(real_models.short_clip), *model, *cache, "--text", "good"]) == 0
    assert "sentiment" in capsys.readouterr().out
    assert main(["predict", "/nonexistent/clip.mp4", *model, *cache]) == 1
    assert "no such media file or folder" in capsys.readouterr().err


def test_transcripts_are_found_under_either_name_and_a_clip_without_one_says_so(real_models, tmp_path, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (one, (one_text, _)), (two, (two_text, _)), (three, (three_text, _)) = MOSI_CLIPS.items()
    shutil.copy(MOSI_MEDIA / f"{one}.mp4", folder / f"{one}.mp4")
    (folder / f"{one}.txt").write_text(one_text)  # <clip>.txt
    shutil.copy(MOSI_MEDIA / f"{two}.mp4", folder / f"{two}.mp4")
    (folder / f"{two}.mp4.txt").write_text(two_text)  # <clip>.<ext>.txt
    shutil.copy(MOSI_MEDIA / f"{three}.mp4", folder / f"{three}.mp4")  # no transcript
    shutil.copy(MOSI_MEDIA / f"{three}.mp4", folder / "both.mp4")
    (folder / "both.txt").write_text(three_text)
    (folder / "both.mp4.txt").write_text("something else")  # two transcripts that differ: which one is meant?
    shutil.copy(MOSI_MEDIA / f"{three}.mp4", folder / "same.mp4")
    (folder / "same.txt").write_text(three_text)
    (folder / "same.mp4.txt").write_text(f"{three_text}\n")  # the same text twice is no conflict
    shutil.copy(MOSI_MEDIA / f"{three}.mp4", folder / "blank.mp4")
    (folder / "blank.txt").write_text(" \n")  # an empty transcript is no text
    out = tmp_path / "predictions.csv"
    model, cache = ["--model", str(real_models.first)], ["--cache-dir", str(tmp_path / "cache")]
    assert main(["predict", str(folder), *model, *cache, "--out", str(out)]) == 0
    capsys.readouterr()
    rows = {r["clip"]: r for r in read_rows(out)}
    assert {name: r["text_source"] for name, r in rows.items() if not r["error"]} == {
        f"{one}.mp4": "file",
        f"{two}.mp4": "file",
        f"{three}.mp4": "none",
        "same.mp4": "file",
        "blank.mp4": "none",
    }
    assert "both.txt" in rows["both.mp4"]["error"] and "both.mp4.txt" in rows["both.mp4"]["error"]
    assert rows["both.mp4"]["sentiment"] == ""
    # the transcripts were read: each gives the text score of predicting that clip with --text
    for name, text in ((one, one_text), (two, two_text), ("same", three_text)):
        assert main(["predict", str(folder / f"{name}.mp4"), *model, *cache, "--text", text, "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert alone["text_source"] == "argument"
        assert float(rows[f"{name}.mp4"]["text_sentiment"]) == pytest.approx(alone["text_sentiment"], abs=1e-6)
    assert rows[f"{one}.mp4"]["text_sentiment"] != rows[f"{two}.mp4"]["text_sentiment"]
    # the clip without one scores as empty text, and the run says how many had none
    assert main(["predict", str(folder / f"{three}.mp4"), *model, *cache, "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["text_source"] == "none"
    assert float(rows[f"{three}.mp4"]["text_sentiment"]) == pytest.approx(alone["text_sentiment"], abs=1e-6)
    assert main(["predict", str(folder), *model, *cache, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "transcripts: 2 of 5 scored clips had none" in captured.err
    assert json.loads(captured.out)["without_text"] == 2

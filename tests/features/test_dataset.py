import math

import pytest

from features.datasets import load_dataset
from features.datasets.mmsa_layout import load_mmsa
from features.types import DatasetError, check_id
from tests.support.data import write_label_csv


def touch(root, *parts):
    path = root.joinpath("Raw", *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def row(video_id="v1", clip_id="1", text="good", label="1.0", mode="train", **extra):
    return {"video_id": video_id, "clip_id": clip_id, "text": text, "label": label, "mode": mode, **extra}


def test_mmsa_layout_groups_clips_by_media_and_keeps_unimodal_labels(tmp_path):
    touch(tmp_path, "v1", "1.mp4")
    touch(tmp_path, "v1", "2.wav")
    write_label_csv(tmp_path, [row(label_T="0.5", label_A="", label_V="-1"), row(clip_id="2", mode="Valid")])
    spec = load_mmsa(tmp_path)
    assert [s.media.name for s in spec.sources] == ["1.mp4", "2.wav"]
    first = spec.clips[0]
    assert (first.key, first.label, first.label_T, first.label_V) == ("v1$_$1", 1.0, 0.5, -1.0)
    assert math.isnan(first.label_A) and math.isnan(first.start)
    assert spec.clips[1].split == "valid"
    assert spec.rejected == []


def test_bad_rows_are_reported_with_line_and_reason_and_good_rows_survive(tmp_path):
    touch(tmp_path, "v1", "1.mp4")
    touch(tmp_path, "v1", "2.mp4")
    rows = [
        row(),
        row(label="nan", clip_id="2"),
        row(label=""),
        row(),
        row(video_id="../etc", clip_id="x"),
        row(clip_id="missing"),
        row(mode="holdout"),
        row(video_id="/abs"),
    ]
    write_label_csv(tmp_path, rows)
    spec = load_mmsa(tmp_path)
    assert [c.key for c in spec.clips] == ["v1$_$1"]
    errors = [f.error for f in spec.rejected]
    assert len(errors) == 7
    for expected in [
        ":3: label is empty or NaN",
        ":5: duplicate id",
        "unsafe video_id '../etc'",
        "no media file Raw/v1/missing.*",
        "unknown split 'holdout'",
        "unsafe video_id '/abs'",
    ]:
        assert any(expected in e for e in errors), (expected, errors)
    assert all(str(tmp_path / "label.csv") in e for e in errors)


def test_segmented_layout_cuts_one_source_and_rejects_zero_length(tmp_path):
    touch(tmp_path, "long.mp4")
    columns = ["video_id", "clip_id", "text", "label", "mode", "start", "end"]
    write_label_csv(
        tmp_path, [row(video_id="long", start=1, end=2.5), row(video_id="long", clip_id="2", start=3, end=3)], columns
    )
    spec = load_mmsa(tmp_path)
    assert len(spec.sources) == 1 and spec.sources[0].media.name == "long.mp4"
    assert (spec.clips[0].start, spec.clips[0].end) == (1.0, 2.5)
    assert "zero-length segment" in spec.rejected[0].error


def test_missing_column_or_label_file_is_an_up_front_error(tmp_path):
    with pytest.raises(DatasetError, match="no label file"):
        load_mmsa(tmp_path)
    write_label_csv(tmp_path, [row()], ["video_id", "clip_id", "text", "mode"])
    with pytest.raises(DatasetError, match="missing column.*label"):
        load_mmsa(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "absent")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a\\b", "/x", "x..y", ".hidden"])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(ValueError, match="unsafe"):
        check_id(bad, "clip_id")

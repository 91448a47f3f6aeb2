"""CMU layouts on the real MOSI/MOSEI label, fold and transcript files (../shared/data), a CMU-layout
extraction that cuts segments from a longer real video, and bad input."""

import csv
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from features.datasets import load_dataset
from features.datasets.cmu import VIDEO_DIRS, load_cmu
from features.datasets.folds import FoldError, read_folds
from features.types import DatasetError
from tests.support.data import SHARED

MOSI, MOSEI = SHARED / "mosi", SHARED / "mosei"
STANDARD = {"mosi": {"train": 1284, "valid": 229, "test": 686}, "mosei": {"train": 16327, "valid": 1871, "test": 4662}}


def by_stage(spec) -> Counter:
    return Counter(f.stage for f in spec.rejected)


def _line_of(error: str) -> int:
    """The label-file line a rejection names."""
    found = re.search(r"OpinionLevelSentiment.csv:(\d+):", error)
    assert found is not None, error
    return int(found.group(1))


# ---- MOSI ----------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_mosi_segments_and_standard_folds_give_1284_229_686_and_report_the_zero_length_segment():
    spec = load_cmu(MOSI, require_media=False, require_text=False)
    assert spec.name == "mosi" and len(spec.sources) == 93
    [zero] = spec.rejected
    assert (zero.video, zero.clip, zero.stage) == ("2WGyTLYerpo", "44", "labels")
    assert "zero-length segment" in zero.error and "OpinionLevelSentiment.csv:171" in zero.error
    counts = Counter(c.split for c in spec.clips)
    counts[read_folds(MOSI)[zero.video]] += 1  # the zero-length segment is in a fold too: left out, reported
    assert counts == STANDARD["mosi"]
    clip = next(c for c in spec.clips if c.key == "03bSnISJMiM$_$1")
    assert (clip.start, clip.end, clip.label, clip.split) == (52.73265306, 56.04512472, 2.4, "train")


@pytest.mark.shared_data
def test_mosi_transcripts_join_2195_of_2199_segments_and_the_others_are_reported():
    spec = load_cmu(MOSI, require_media=False)
    assert len(spec.clips) == 2195 and all(c.text for c in spec.clips)
    assert Counter(c.split for c in spec.clips) == {"train": 1281, "valid": 229, "test": 685}
    no_text = sorted(f"{f.video}_{f.clip}" for f in spec.rejected if f.stage == "text")
    assert no_text == ["5W7Z1C_fDaE_24", "BioHAh1qJAQ_30", "lXPQBPVc5Cw_30"]  # + 2WGyTLYerpo_44, zero-length
    assert by_stage(spec) == {"text": 3, "labels": 1}
    clip = next(c for c in spec.clips if c.key == "03bSnISJMiM$_$1")
    assert clip.text == "anyhow it was really good"


@pytest.mark.shared_data
def test_segments_whose_source_video_is_missing_are_reported_one_by_one(tmp_path):
    for name in (
        "OpinionLevelSentiment.csv",
        "MMCPanda_label.csv",
        "std_folds_train.txt",
        "std_folds_valid.txt",
        "std_folds_test.txt",
    ):
        (tmp_path / name).symlink_to(MOSI / name)
    (tmp_path / "Video" / "Full").mkdir(parents=True)
    (tmp_path / "Video" / "Full" / "03bSnISJMiM.mp4").write_bytes(b"\0")
    spec = load_dataset(tmp_path)  # dispatches to the CMU layout on OpinionLevelSentiment.csv
    [source] = spec.sources
    assert source.media == tmp_path / "Video" / "Full" / "03bSnISJMiM.mp4"
    assert {c.video_id for c in source.clips} == {"03bSnISJMiM"} and len(source.clips) > 5
    assert by_stage(spec)["media"] == 2195 - len(source.clips)
    missing = next(f for f in spec.rejected if f.stage == "media")
    assert f"no source video {missing.video}.*" in missing.error and VIDEO_DIRS[0] in missing.error


# ---- MOSEI ---------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_mosei_label_dump_and_folds_give_16327_1871_4662_with_399_segments_outside_reported():
    spec = load_cmu(MOSEI, require_media=False, require_text=False)
    assert Counter(c.split for c in spec.clips) == STANDARD["mosei"]
    assert by_stage(spec) == {"folds": 399}
    assert len({f.video for f in spec.rejected}) == 68
    assert all("is in no standard fold" in f.error for f in spec.rejected)
    assert all(c.start >= 0 and c.end > c.start and abs(c.label) <= 3 for c in spec.clips)
    # segment ids number a video's segments in .csd order, as the CMU SDK does
    first = [c for c in spec.clips if c.video_id == "-3g5yACwYnA"]
    assert [(c.clip_id, c.start) for c in first[:3]] == [("0", 82.753), ("1", 119.919), ("2", 4.84)]


@pytest.mark.shared_data
def test_mosei_valid_and_test_transcripts_parse_with_quoted_multiline_fields_and_join():
    test_csv = MOSEI / "Data_Test_original_without_neg_time.csv"
    physical_lines = test_csv.read_bytes().count(b"\n")
    with open(test_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4662 < physical_lines - 1  # some quoted fields hold line breaks
    spec = load_cmu(MOSEI, require_media=False)
    assert Counter(c.split for c in spec.clips) == {"valid": 1871, "test": 4662}
    assert all(c.text for c in spec.clips)
    assert by_stage(spec) == {"text": 16327, "folds": 399}  # the train transcripts are not in ../shared
    clip = next(c for c in spec.clips if c.video_id == "-571d8cVauQ" and c.start == 0.0)
    assert clip.text == "This is Rhett Reiger, White Caspian Studios on behalf of Expert Village."
    with open(MOSEI / "CMU_MOSEI_Labels_csd_dump.csv", newline="") as f:
        negative = {(r["id"], float(r["interval_end"])) for r in csv.DictReader(f) if float(r["interval_start"]) < 0}
    clamped = [c for c in spec.clips if (c.video_id, c.end) in negative]
    assert len(negative) == 239 and clamped  # CMU's transcript files clip negative start times to 0, as we do
    assert all(c.start == 0.0 and c.text for c in clamped)


# ---- a CMU-layout run on a real video ----------------------------------------------------------------------


@pytest.mark.shared_data
def test_cmu_layout_cuts_segments_from_a_longer_real_video_once(tmp_path):
    """The 12.3 s real MOSI clip 0h-zjBukYpk_2 stands in for a whole source video with two segments."""
    from features.cache import ShardCache
    from features.config import ExtractConfig, FaceConfig
    from features.extract import SourceStatus, extract_source
    from features.media import decode

    (tmp_path / "Raw").mkdir()
    shutil.copyfile(MOSI / "media" / "0h-zjBukYpk_2.mp4", tmp_path / "Raw" / "src-video.mp4")
    segments = [(1.0, 4.5, "1", 1.2), (6.25, 11.0, "2", -0.6)]
    with open(tmp_path / "OpinionLevelSentiment.csv", "w", newline="") as f:
        csv.writer(f).writerows([(s, e, "src-video", n, y) for s, e, n, y in segments])
    with open(tmp_path / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ("video_id", "clip_id", "text", "mode"),
                ("src-video", "1", "it is a bad movie", "train"),
                ("src-video", "2", "i did not like it", "test"),
            ]
        )
    spec = load_dataset(tmp_path)
    [source] = spec.sources
    assert spec.rejected == [] and [c.split for c in source.clips] == ["train", "test"]
    media = decode(source.media, fps=5.0)
    for clip, (start, end, _, _) in zip(source.clips, segments):
        samples = media.audio[int(round(clip.start * media.sample_rate)) : int(round(clip.end * media.sample_rate))]
        assert len(samples) / media.sample_rate == pytest.approx(end - start, abs=1e-3)
        in_segment = (media.frame_times >= clip.start) & (media.frame_times < clip.end)
        assert in_segment.sum() / 5.0 == pytest.approx(end - start, abs=0.25)
    config = ExtractConfig(face=FaceConfig(fps=5.0, max_side=480))
    result = extract_source(source, config, ShardCache(tmp_path / "cache"))
    assert result.status is SourceStatus.EXTRACTED and result.failures == []
    for clip, (start, end, _, label) in zip(result.clips, segments):
        assert (clip.start, clip.end, clip.label) == (start, end, label)
        assert len(clip.audio) / 100 == pytest.approx(end - start, abs=0.05)  # 10 ms openSMILE frames
        assert len(clip.vision) / 5.0 == pytest.approx(end - start, abs=0.25)
        assert np.isfinite(clip.audio).all() and clip.face_mask.mean() > 0.8


# ---- bad input ------------------------------------------------------------------------------------------------


def write_mosi(
    root: Path, rows: list[tuple], transcripts: list[tuple] | None = None, folds: dict[str, list[str]] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "OpinionLevelSentiment.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    if transcripts is not None:
        with open(root / "transcripts.csv", "w", newline="") as f:
            csv.writer(f).writerows([("id", "text", "mode"), *transcripts])
    for split, videos in (folds or {}).items():
        (root / f"std_folds_{split}.txt").write_text("".join(f"{v}\n" for v in videos))
    return root


FOLDS = {"train": ["vidA"], "valid": ["vidB"], "test": []}


def test_bad_segment_rows_are_reported_never_dropped(tmp_path):
    rows = [
        (0, 2.5, "vidA", 1, 1.0),
        (2.5, 4, "vidA", 2, 3.5),
        (4, 5, "vidA", 3, "high"),
        (5, 6, "vidA", 4),
        (6, 6, "vidA", 5, 0.2),
        (6, 7, "../etc", 6, 0.0),
        (0, 1, "vidA", 1, 0.4),
        (1, 2, "vidC", 1, 0.0),
    ]
    root = write_mosi(tmp_path / "mosi", rows, folds=FOLDS)
    spec = load_cmu(root, require_media=False, require_text=False)
    assert [c.key for c in spec.clips] == ["vidA$_$1"]
    by_line = {_line_of(f.error): f for f in spec.rejected}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert "label 3.5 is outside [-3, 3]" in by_line[2].error
    assert "'high' is not a number" in by_line[3].error
    assert "expected 5 columns" in by_line[4].error and by_line[4].video == "vidA"
    assert "zero-length segment" in by_line[5].error
    assert "unsafe video_id '../etc'" in by_line[6].error
    assert "duplicate segment 'vidA$_$1'" in by_line[7].error
    assert {f.stage for n, f in by_line.items() if n < 8} == {"labels"} and by_line[8].stage == "folds"


def test_mosei_dump_missing_a_column_is_an_error(tmp_path):
    (tmp_path / "CMU_MOSEI_Labels_csd_dump.csv").write_text("id,interval_start,feature_0\nvidA,0.0,1.0\n")
    with pytest.raises(DatasetError, match="missing column.*interval_end"):
        load_cmu(tmp_path, require_text=False)


def test_splits_come_from_the_transcripts_when_there_are_no_folds_and_unknown_names_are_errors(tmp_path):
    rows = [(0, 1, "vidA", 1, 1.0), (1, 2, "vidA", 2, -1.0), (0, 1, "vid_B", 1, 0.5)]
    root = write_mosi(
        tmp_path / "ok",
        rows,
        transcripts=[("vidA_1", "good", "train"), ("vidA_2", "bad", "dev"), ("vid_B_1", "fine", "test")],
    )
    spec = load_cmu(root, require_media=False)
    assert [(c.key, c.split, c.text) for c in spec.clips] == [
        ("vidA$_$1", "train", "good"),
        ("vidA$_$2", "valid", "bad"),
        ("vid_B$_$1", "test", "fine"),
    ]
    root = write_mosi(tmp_path / "bad", rows, transcripts=[("vidA_1", "good", "training")])
    with pytest.raises(DatasetError, match=r"transcripts.csv:2: unknown split 'training'"):
        load_cmu(root, require_media=False)
    root = write_mosi(tmp_path / "none", rows)
    with pytest.raises(DatasetError, match="no standard folds"):
        load_cmu(root, require_media=False, require_text=False)
    with pytest.raises(DatasetError, match="no transcript file found"):
        load_cmu(root, require_media=False)


def test_a_video_in_two_folds_is_an_error(tmp_path):
    root = write_mosi(tmp_path, [(0, 1, "vidA", 1, 1.0)], folds={"train": ["vidA"], "valid": ["vidA"], "test": []})
    with pytest.raises(FoldError, match="'vidA' is in both the train and the valid fold"):
        load_cmu(root, require_media=False, require_text=False)


def test_an_incomplete_set_of_fold_files_is_an_error(tmp_path):
    root = write_mosi(tmp_path, [(0, 1, "vidA", 1, 1.0)], folds={"train": ["vidA"], "test": []})
    with pytest.raises(FoldError, match="std_folds_valid.txt: missing"):
        load_cmu(root, require_media=False, require_text=False)


def test_the_sdk_fold_module_is_parsed_not_run(tmp_path):
    marker = tmp_path / "ran"
    root = write_mosi(tmp_path / "d", [(0, 1, "vidA", 1, 1.0), (0, 1, "vidB", 1, 2.0)])
    (root / "Labels").mkdir()
    (root / "Labels" / "cmu_mosi_std_folds.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "standard_train_fold=['vidA']\nstandard_valid_fold=[]\nstandard_test_fold=['vidB',\n  ]\n"
    )
    spec = load_cmu(root, require_media=False, require_text=False)
    assert [(c.video_id, c.split) for c in spec.clips] == [("vidA", "train"), ("vidB", "test")]
    assert not marker.exists()


def test_raw_release_transcript_formats_join(tmp_path):
    root = write_mosi(tmp_path / "mosi", [(0, 1, "vidA", 1, 1.0), (1, 2.5, "vidA", 2, 0.0)], folds=FOLDS)
    (root / "Transcript" / "Segmented").mkdir(parents=True)
    (root / "Transcript" / "Segmented" / "vidA.annotprocessed").write_text("1_DELIM_HELLO THERE\n2_DELIM_BYE\n")
    assert [c.text for c in load_cmu(root, require_media=False).clips] == ["HELLO THERE", "BYE"]
    mosei = tmp_path / "mosei"
    (mosei / "Transcript" / "Segmented" / "Combined").mkdir(parents=True)
    (mosei / "CMU_MOSEI_Labels_csd_dump.csv").write_text(
        "id,interval_start,interval_end,feature_0\nvidA,-0.2,3.5,1.0\nvidB,10.0,12.25,-2.0\n"
    )
    (mosei / "Transcript" / "Segmented" / "Combined" / "vidA.txt").write_text("vidA___0___0.0___3.5___one, two\n")
    (mosei / "Transcript" / "Segmented" / "Combined" / "vidB.txt").write_text("vidB___3___10.0___12.25___three\n")
    for split, videos in FOLDS.items():
        (mosei / f"std_folds_{split}.txt").write_text("\n".join(videos))
    spec = load_cmu(mosei, require_media=False)
    assert [(c.key, c.start, c.text) for c in spec.clips] == [
        ("vidA$_$0", 0.0, "one, two"),
        ("vidB$_$0", 10.0, "three"),
    ]


def test_the_official_mosei_csd_reads_like_its_csv_dump(tmp_path):
    import h5py

    with h5py.File(tmp_path / "CMU_MOSEI_Labels.csd", "w") as f:
        data = f.create_group("All Labels").create_group("data")
        for video, intervals, sentiment in (
            ("vidA", [[5.0, 9.5], [-0.25, 4.0]], [2.0, -1.0]),
            ("vidB", [[1.0, 1.0]], [0.0]),
        ):
            data.create_dataset(f"{video}/intervals", data=np.array(intervals))
            data.create_dataset(f"{video}/features", data=np.column_stack([sentiment, np.zeros((len(sentiment), 6))]))
    for split, videos in {"train": ["vidA", "vidB"], "valid": [], "test": []}.items():
        (tmp_path / f"std_folds_{split}.txt").write_text("\n".join(videos))
    (tmp_path / "Data_Val.csv").write_text(
        'video,start_time,end_time,sentiment,text\nvidA,5.0,9.5,2.0,"well, yes"\nvidA,0.0,4.0,-1.0,no\n'
    )
    spec = load_dataset(tmp_path)
    assert spec.name == "mosei" and not spec.sources  # no media: every segment is reported
    assert Counter(f.stage for f in spec.rejected) == {"media": 2, "labels": 1}
    spec = load_cmu(tmp_path, require_media=False)
    assert [(c.key, c.start, c.end, c.label, c.text) for c in spec.clips] == [
        ("vidA$_$0", 5.0, 9.5, 2.0, "well, yes"),
        ("vidA$_$1", 0.0, 4.0, -1.0, "no"),
    ]
    [zero] = spec.rejected
    assert zero.clip == "0" and "zero-length" in zero.error and "data/vidB[0]" in zero.error
    (tmp_path / "CMU_MOSEI_Labels.csd").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="not a CMU computational sequence"):
        load_cmu(tmp_path, require_text=False)


@pytest.mark.parametrize(
    "name,label,kept",
    [("sims", "1.5", False), ("sims", "-1", True), ("mosi", "3.5", False), ("mosi", "-3", True), ("mydata", "7", True)],
)
def test_load_dataset_rejects_labels_out_of_range_for_the_dataset(tmp_path, name, label, kept):
    root = tmp_path / name
    (root / "Raw" / "v1").mkdir(parents=True)
    (root / "Raw" / "v1" / "1.mp4").write_bytes(b"\0")
    (root / "label.csv").write_text(
        f"video_id,clip_id,text,label,label_T,label_A,label_V,mode\nv1,1,hello,{label},,,,train\n"
    )
    spec = load_dataset(root)
    assert len(spec.clips) == int(kept) and len(spec.rejected) == int(not kept)
    if not kept:
        assert "outside" in spec.rejected[0].error and spec.rejected[0].stage == "labels"


def test_unimodal_labels_are_range_checked_too(tmp_path):
    root = tmp_path / "sims"
    (root / "Raw" / "v1").mkdir(parents=True)
    (root / "Raw" / "v1" / "1.mp4").write_bytes(b"\0")
    (root / "label.csv").write_text(
        "video_id,clip_id,text,label,label_T,label_A,label_V,mode\nv1,1,hello,0.2,0.4,-2,0.0,train\n"
    )
    [failure] = load_dataset(root).rejected
    assert "label_A -2.0 is outside [-1, 1]" in failure.error

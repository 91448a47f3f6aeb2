"""The retrain flow on a small demo dataset, with the real DVC pipeline and a real Prefect server: only new clips
are extracted, a worse challenger is not promoted, every decision is recorded, and a failed or overlapping
retrain leaves the champion as it was."""

import csv
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from features.datasets.demo.corpus import make_demo_corpus
from features.hash_index import MediaHashes
from features.types import ClipSpec, DatasetSpec, SourceVideo
from flows.cli import main
from flows.releases import (
    DatasetPaths,
    Decision,
    RetrainError,
    exclusive,
    read_history,
)
from flows.retrain import annotations_hash, better, retrain
from tests.support.data import REPO
from tests.support.projects import project

TRAIN = {"preset": "demo", "seeds": [1111], "max_epochs": 1, "device": "cpu"}
DIVERGING = {**TRAIN, "learning_rate_other": 10.0}  # one Adam step this large wrecks the fusion head: a bad model


def set_train(root: Path, section: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"] = section
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def hold_back_one_train_video(data: Path, store: Path) -> tuple[str, list[dict]]:
    """Move one training video (its rows and media) out of the dataset; return its id and rows."""
    with open(data / "label.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    video = [r["video_id"] for r in rows if r["mode"] == "train"][-1]
    write_labels(data, [r for r in rows if r["video_id"] != video], list(rows[0]))
    shutil.move(data / "Raw" / video, store / video)
    return video, [r for r in rows if r["video_id"] == video]


def write_labels(data: Path, rows: list[dict], columns: list[str]) -> None:
    with open(data / "label.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def champion_state(paths: DatasetPaths) -> tuple[str, str]:
    """Which release the champion is, and a digest of its weights."""
    weights = b"".join(p.read_bytes() for p in sorted((paths.champion / "weights").iterdir()))
    return str(paths.champion.resolve()), hashlib.sha256(weights).hexdigest()


@pytest.mark.slow
def test_retrain_extracts_only_new_clips_keeps_a_worse_model_and_records_every_decision(
    tmp_path, monkeypatch, prefect_server
):
    root = project(tmp_path / "project", extract={"face": {"fps": 5.0}})
    set_train(root, TRAIN)
    data = make_demo_corpus(root / "data" / "demo", clips=12, clips_per_video=2, seed=3)
    video, new_rows = hold_back_one_train_video(data, tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PREFECT_HOME", str(root / ".prefect"))
    paths = DatasetPaths("demo")

    # Train once: no champion yet, so the model is promoted, and dvc.lock records it.
    first = retrain(dataset="demo")
    assert first["decision"] == Decision.PROMOTED and first["champion"] is None
    assert first["extraction"] == {"extracted": 10, "cached": 0, "failed": 0, "failed_clips": 0}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    model_out = next(o for o in lock["stages"]["train@demo"]["outs"] if o["path"] == "build/demo/model")
    assert first["challenger"]["model_md5"] == model_out["md5"]
    assert json.loads((paths.champion / "champion.json").read_text())["data_hash"] == first["data_hash"]
    champion = champion_state(paths)

    # Same annotations: nothing to do (through the CLI), and nothing recorded.
    started = time.monotonic()
    assert main(["retrain", "demo"]) == 0
    assert time.monotonic() - started < 30 and len(read_history(paths.history)) == 1

    # New annotated clips, and a training config that makes a worse model: only the new clips are extracted,
    # the challenger is trained and compared on the validation split, the decision is recorded, and the
    # champion stays.
    shutil.move(tmp_path / video, data / "Raw" / video)
    with open(data / "label.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(new_rows[0]), lineterminator="\n").writerows(new_rows)
    set_train(root, DIVERGING)
    second = retrain(dataset="demo")
    assert second["extraction"] == {"extracted": 2, "cached": 10, "failed": 0, "failed_clips": 0}
    assert second["data_hash"] != first["data_hash"] and second["clips"] == 12
    assert second["decision"] == Decision.KEPT and second["champion"]["basis"] == "current valid split"
    assert second["challenger"]["valid"]["MAE"] > second["champion"]["valid"]["MAE"]
    assert champion_state(paths) == champion
    assert retrain(dataset="demo")["decision"] == Decision.NOTHING_TO_DO

    # Never two at once: a retrain that finds the dataset's lock held fails at once.
    with exclusive(paths.home / "retrain.lock", "test holder"):
        with pytest.raises(RetrainError, match="another retrain of demo is running"):
            retrain(dataset="demo", force=True)

    # A failure inside a retrain is recorded and leaves the champion untouched.
    with pytest.raises(RetrainError, match="no-such-stage"):
        retrain(dataset="demo", stages=["extract@demo", "no-such-stage"], force=True)
    assert champion_state(paths) == champion
    records = read_history(paths.history)
    assert [r["decision"] for r in records] == [
        Decision.PROMOTED,
        Decision.KEPT,
        Decision.FAILED,
    ] and "no-such-stage" in records[-1]["error"]
    assert all({"time", "data_hash", "decision"} <= set(r) for r in records)
    assert {"challenger", "champion", "reason", "extraction"} <= set(records[1])


@pytest.mark.parametrize(
    "new, old, wins",
    [(0.3, 0.5, True), (0.5, 0.5, False), (0.6, 0.5, False), (math.nan, 0.5, False), (0.5, math.nan, True)],
)
def test_only_a_strictly_lower_valid_error_wins_and_not_a_number_never_does(new, old, wins):
    assert better(new, old) is wins


def test_the_annotation_hash_reads_only_media_whose_stat_changed(tmp_path):
    media = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(media):
        path.write_bytes(f"video {i}".encode())
        os.utime(path, ns=(10**18, 10**18))  # an old mtime: the hashes are recorded
    spec = DatasetSpec(
        name="d",
        root=tmp_path,
        sources=[SourceVideo(m, [ClipSpec(m.stem, "0", "text", 0.5, "train")]) for m in media],
    )
    index = MediaHashes(tmp_path / "cache" / "media-sha256.sqlite")
    first = annotations_hash(spec, index)
    media[1].write_bytes(b"VIDEO 1")  # other bytes behind a restored stat: not read again
    os.utime(media[1], ns=(10**18, 10**18))
    assert annotations_hash(spec, index) == first
    os.utime(media[1], ns=(10**18 + 1, 10**18 + 1))  # a new mtime: read again
    changed = annotations_hash(spec, index)
    assert changed != first and changed == annotations_hash(spec, MediaHashes(tmp_path / "fresh.sqlite"))


def test_retrain_of_an_unknown_absent_or_unbuilt_dataset_fails_fast(
    tmp_path, monkeypatch, capsys, prefect_server, mosi_dataset
):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())  # mosi and mosei served, not built
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    assert main(["retrain", "nope"]) == 1
    assert "'nope' is not in params serve.datasets" in capsys.readouterr().err
    assert main(["retrain", "mosei"]) == 1  # served, but no data/mosei/
    err = capsys.readouterr().err
    assert "data/mosei/" in err and "Real datasets" in err and not (tmp_path / "models").exists()
    (tmp_path / "data").mkdir()
    mosi_dataset.rename(tmp_path / "data" / "mosi")
    assert main(["retrain", "mosi"]) == 1  # its data is there, but dvc.yaml has no stages for it
    err = capsys.readouterr().err
    assert "which dvc.yaml has for the datasets params.yaml `build` lists (demo): add `mosi: train_mosi` there" in err
    assert not (tmp_path / "models").exists() and not (tmp_path / "build").exists()

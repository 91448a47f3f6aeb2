"""The feature-extract Prefect flow and the `selfmm extract` / `selfmm info` commands, on a test Prefect API."""

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from features.errors import DiskFull
from features.store import FeatureStore
from features.types import DatasetError
from flows.cli import main
from flows.extract import ExtractionFailed, feature_extract
from flows.settings import PROJECT
from tests.support.data import add_clip


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=60):
        yield


def add_broken_clip(root, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\0" * 500)
    row = add_clip(root, "broken", "1", bad, "some words", 1.0, "train")
    with open(root / "label.csv", "a") as f:
        f.write(f"{row['video_id']},{row['clip_id']},{row['text']},{row['label']},,,,,{row['mode']}\n")


def test_flow_writes_store_and_failure_report_under_the_threshold(mosi_dataset, tmp_path):
    add_broken_clip(mosi_dataset, tmp_path)
    out = tmp_path / "out" / "mosi.h5"
    summary = feature_extract(
        data=str(mosi_dataset),
        out=str(out),
        cache_dir=str(tmp_path / "cache"),
        overrides={"face": {"fps": 2.0}},
        max_failure_fraction=0.5,
    )
    assert summary["clips"] == 3 and summary["failed"] == 1 and summary["sources"]["extracted"] == 3
    with FeatureStore(out) as store:
        assert len(store) == 3 and store.provenance["vision"].config["fps"] == 2.0
    with open(summary["failure_report"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["video"], r["stage"]) for r in rows] == [("broken", "decode")]

    again = feature_extract(
        data=str(mosi_dataset),
        out=str(out),
        cache_dir=str(tmp_path / "cache"),
        overrides={"face": {"fps": 2.0}},
        max_failure_fraction=0.5,
    )
    assert again["sources"]["cached"] == 3 and again["sources"]["extracted"] == 0


def test_flow_fails_over_the_threshold_but_keeps_the_work(mosi_dataset, tmp_path):
    add_broken_clip(mosi_dataset, tmp_path)
    out = tmp_path / "mosi.h5"
    with pytest.raises(ExtractionFailed, match=r"1 of 4 clips failed \(25% > 10% allowed\)"):
        feature_extract(
            data=str(mosi_dataset),
            out=str(out),
            cache_dir=str(tmp_path / "cache"),
            overrides={"face": {"fps": 2.0}},
            max_failure_fraction=0.1,
        )
    with FeatureStore(out) as store:
        assert len(store) == 3


def test_cli_extract_then_info(mosi_dataset, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    code = main(
        [
            "extract",
            "--dataset",
            str(mosi_dataset),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
            "--set",
            "face.fps=2",
            "--set",
            "audio.feature_set=ComParE_2016",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == {"train": 1, "valid": 1, "test": 1}
    assert info["feature_dims"]["audio"] == 65
    assert info["provenance"]["audio"]["config"]["feature_set"] == "ComParE_2016"
    assert info["provenance"]["vision"]["identity"]["mediapipe"] == "0.10.21"
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "audio: opensmile" in shown and "made by " in shown and "opensmile 2.6.0" in shown


def test_cli_reports_bad_dataset_and_bad_override(tmp_path, capsys, prefect_server):
    assert main(["extract", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.h5")]) == 1
    assert f"{tmp_path / 'nowhere'}/: no such folder" in capsys.readouterr().err
    (tmp_path / "ds").mkdir()
    assert (
        main(
            ["extract", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "x.h5"), "--set", "face.nonsense=1"]
        )
        == 1
    )
    assert "extract.face: unknown key(s) nonsense; allowed: backend, fps" in capsys.readouterr().err


def test_cli_extract_in_worker_processes_writes_the_threads_store(mosi_dataset, tmp_path, capsys):
    stores = {}
    for runner in ("threads", "processes"):
        stores[runner] = tmp_path / f"{runner}.h5"
        args = ["extract", "--dataset", str(mosi_dataset), "--out", str(stores[runner]), "--set", "face.fps=2"]
        assert main([*args, "--cache-dir", str(tmp_path / runner), "--task-runner", runner, "--workers", "2"]) == 0
        assert json.loads(capsys.readouterr().out)["sources"] == {"extracted": 3, "cached": 0, "failed": 0}
    assert stores["threads"].read_bytes() == stores["processes"].read_bytes()


def test_a_dataset_that_is_not_there_fails_at_once_saying_where_to_put_it_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        feature_extract(data="mosei", out="build/mosei/features.h5", dataset="mosei")
    message = str(err.value)
    assert message.startswith(f"data/mosei/: no such folder ({tmp_path / 'data/mosei'})")
    assert "label.csv" in message and "CMU_MOSEI_Labels.csd" in message and "--param data=DIR" in message
    assert "docs/datasets.md ('Real datasets')" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no build/, no shard cache

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mosei").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"^data/mosei/: not a folder"):
        feature_extract(data="data/mosei", out="build/mosei/features.h5")


def test_data_kept_elsewhere_is_named_by_the_deployment_and_relative_paths_are_the_projects(
    mosi_dataset, tmp_path, monkeypatch
):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    shared = mosi_dataset.rename(tmp_path / "CMU-MOSI")  # a folder whose name is not the dataset's
    monkeypatch.setenv(PROJECT, str(project))
    monkeypatch.chdir(elsewhere)  # where a worker might start a flow run
    summary = feature_extract(
        data=str(shared), out="build/mosi/features.h5", dataset="mosi", overrides={"face": {"fps": 2.0}}
    )
    assert summary["clips"] == 3
    with FeatureStore(project / "build/mosi/features.h5") as store:
        assert store.dataset == "mosi"
    assert (project / ".cache/shards").is_dir() and list(elsewhere.iterdir()) == []

    (project / "data").mkdir()
    shared.rename(project / "data" / "mosi")
    again = feature_extract(data="mosi", out="build/mosi/again.h5", overrides={"face": {"fps": 2.0}})
    assert again["sources"]["cached"] == 3 and (project / "build/mosi/again.h5").is_file()


FPS_2 = {"face": {"fps": 2.0}}


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted in the test's folder (root only), unmounted after."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"full disk: cannot mount a small file system here ({done.stderr.strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_disk_stops_the_run_with_one_clear_error_and_a_re_run_after_freeing_space_finishes(
    mosi_dataset, tmp_path, small_disk
):
    def extract(out: Path, cache: Path) -> dict:
        return feature_extract(data=str(mosi_dataset), out=str(out), cache_dir=str(cache), overrides=FPS_2)

    reference = tmp_path / "reference.h5"
    extract(reference, tmp_path / "cache")
    written = reference.stat().st_size + sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "ballast", "wb") as ballast:  # leaves room for about half of what the run writes
        ballast.truncate(0)
        ballast.write(b"\0" * (free - written // 2))

    out, cache = small_disk / "features.h5", small_disk / "cache"
    started = time.monotonic()
    with pytest.raises(DiskFull) as err:
        extract(out, cache)
    assert "the disk is full" in str(err.value) and str(err.value).startswith(str(small_disk))
    assert time.monotonic() - started < 60  # no retries of a disk that stays full
    assert not out.exists() and not list(small_disk.rglob("*.tmp-*"))  # nothing half-written to trust

    (small_disk / "ballast").unlink()
    summary = extract(out, cache)
    assert summary["sources"]["cached"] >= 1  # what was written whole before the disk filled is reused
    assert out.read_bytes() == reference.read_bytes()

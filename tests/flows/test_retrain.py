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
from flows.params import ServeConfig, load_params, parse_params
from flows.releases import (
    DatasetPaths,
    Decision,
    RetrainError,
    append_history,
    current_release,
    exclusive,
    list_releases,
    promote,
    prune_releases,
    read_history,
    rollback,
)
from flows.retrain import annotations_hash, better, retrain
from selfmm.bundle import BundleError, verify_bundle, write_manifest
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


def history(paths: DatasetPaths) -> list[dict]:
    return [json.loads(line) for line in paths.history.read_text().splitlines()]


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
    assert time.monotonic() - started < 30 and len(history(paths)) == 1

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
    records = history(paths)
    assert [r["decision"] for r in records] == [
        Decision.PROMOTED,
        Decision.KEPT,
        Decision.FAILED,
    ] and "no-such-stage" in records[-1]["error"]
    assert all({"time", "data_hash", "decision"} <= set(r) for r in records)
    assert {"challenger", "champion", "reason", "extraction"} <= set(records[1])


def test_promotion_swaps_the_champion_in_one_step_and_keeps_the_old_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    releases = []
    for weights in (b"old", b"new"):
        (paths.model / "weights").mkdir(parents=True, exist_ok=True)
        (paths.model / "weights" / "seed_1.safetensors").write_bytes(weights)
        write_manifest(paths.model)
        releases.append(promote(paths, {"data_hash": weights.decode()}))
    assert paths.champion.is_symlink() and paths.champion.resolve() == releases[1].resolve()
    assert (paths.champion / "weights" / "seed_1.safetensors").read_bytes() == b"new"
    assert json.loads((paths.champion / "champion.json").read_text()) == {"data_hash": "new"}
    assert (releases[0] / "weights" / "seed_1.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in paths.home.iterdir()) == ["champion", "releases"]
    assert list_releases(paths) == [r.name for r in releases]


def promote_fake(paths: DatasetPaths, weights: str, keep: int = ServeConfig.keep_releases) -> str:
    """What a retrain that promotes does, with a fake bundle (one weights file and its manifest): promote it, then
    record the decision."""
    (paths.model / "weights").mkdir(parents=True, exist_ok=True)
    (paths.model / "weights" / "seed_1.safetensors").write_text(weights)
    write_manifest(paths.model)
    previous = current_release(paths)
    record = {
        "time": "t",
        "dataset": paths.dataset,
        "data_hash": weights,
        "decision": Decision.PROMOTED,
        "champion": {"release": f"releases/{previous}"} if previous else None,
    }
    record["release"] = str(promote(paths, record, keep))
    append_history(paths.history, record)
    return Path(record["release"]).name


def champion_weights(paths: DatasetPaths) -> str:
    return (paths.champion / "weights" / "seed_1.safetensors").read_text()


def named_releases(value: object) -> list[str]:
    """Every release id a history value names, at any depth."""
    if isinstance(value, dict):
        return [name for v in value.values() for name in named_releases(v)]
    if isinstance(value, str) and Path(value).parent.name == "releases":
        return [Path(value).name]
    return []


def test_rollback_after_two_promotions_makes_the_first_release_champion_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    paths = DatasetPaths("demo")
    first, second = promote_fake(paths, "first"), promote_fake(paths, "second")
    assert current_release(paths) == second

    # Through the command line: back to the champion before the current one, in one symlink swap, recorded.
    assert main(["rollback", "demo"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert paths.champion.is_symlink() and os.readlink(paths.champion) == f"releases/{first}"
    assert champion_weights(paths) == "first" and list_releases(paths) == [first, second]
    record = history(paths)[-1]
    assert record == printed
    assert record["decision"] == Decision.ROLLED_BACK and record["release"] == f"releases/{first}"
    assert record["previous"] == f"releases/{second}"
    assert [r["decision"] for r in history(paths)] == [Decision.PROMOTED, Decision.PROMOTED, Decision.ROLLED_BACK]

    # Rollbacks step back like undo: nothing was champion before the first release.
    with pytest.raises(RetrainError, match="nothing to roll back to"):
        rollback("demo")
    # --to goes anywhere kept; then a rollback returns from there.
    assert rollback("demo", to=second)["previous"] == f"releases/{first}" and champion_weights(paths) == "second"
    assert rollback("demo")["release"] == f"releases/{first}" and champion_weights(paths) == "first"
    # A retrain that promotes after a rollback replaces the rolled-back champion, which a rollback returns to.
    third = promote_fake(paths, "third")
    assert rollback("demo", to=f"releases/{second}")["previous"] == f"releases/{third}"
    assert rollback("demo")["release"] == f"releases/{third}"
    assert rollback("demo")["release"] == f"releases/{first}"


def test_a_rollback_to_a_missing_release_or_to_nothing_is_a_clear_error_that_changes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    paths = DatasetPaths("demo")
    with pytest.raises(RetrainError, match="no champion"):
        rollback("demo")
    assert not Path("models").exists()
    first = promote_fake(paths, "first")
    with pytest.raises(RetrainError, match=f"no champion before {first}, nothing to roll back to"):
        rollback("demo")
    second = promote_fake(paths, "second")

    def state() -> tuple[str, bytes, list[str]]:
        return os.readlink(paths.champion), paths.history.read_bytes(), list_releases(paths)

    before = state()
    for to in ("20000101T000000000000Z", "../../build/demo/model", "history.jsonl"):
        with pytest.raises(RetrainError, match=f"no release '{to}' in models/demo/releases; kept: {first}"):
            rollback("demo", to=to)
        assert state() == before
    with pytest.raises(RetrainError, match=f"{second} is already the champion"):
        rollback("demo", to=second)
    with exclusive(paths.lock, "test holder"):  # the retrain lock: never during a retrain
        with pytest.raises(RetrainError, match="another retrain or rollback of demo is running"):
            rollback("demo")
    assert state() == before
    assert main(["rollback", "demo", "--to", "nope"]) == 1
    assert "selfmm: error: demo: no release 'nope'" in capsys.readouterr().err
    assert state() == before and champion_weights(paths) == "second"


def test_a_damaged_bundle_is_never_promoted_and_a_damaged_release_never_rolled_back_to(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    first, second = promote_fake(paths, "first"), promote_fake(paths, "second")
    assert verify_bundle(paths.releases / second)  # champion.json, added beside the bundle's files, is not one

    def state() -> tuple[str, bytes, list[str]]:
        return os.readlink(paths.champion), paths.history.read_bytes(), list_releases(paths)

    before = state()
    (paths.model / "weights" / "seed_1.safetensors").write_text("third!")  # after its manifest: same size
    with pytest.raises(BundleError, match=r"weights/seed_1.safetensors: content differs from the manifest"):
        promote(paths, {"data_hash": "third!"})
    assert state() == before and sorted(p.name for p in paths.releases.iterdir()) == [first, second]

    damaged = paths.releases / first / "weights" / "seed_1.safetensors"
    damaged.write_text("fir5t")
    with pytest.raises(RetrainError, match=rf"release {first} cannot be champion again: .*seed_1.safetensors: con"):
        rollback("demo")
    assert main(["rollback", "demo", "--to", first]) == 1
    assert "weights/seed_1.safetensors: content differs from the manifest" in capsys.readouterr().err
    assert state() == before and champion_weights(paths) == "second"


def test_pruning_keeps_exactly_n_releases_besides_the_champion_and_never_the_champion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    made = [promote_fake(paths, f"w{i}", keep=2) for i in range(5)]
    assert list_releases(paths) == made[-3:] and current_release(paths) == made[-1]

    # Roll back to the oldest kept one. A promotion never prunes the release it replaces (the one a rollback
    # returns to) nor one another link points to: these two are the two kept, and the newer w4 goes.
    rollback("demo", to=made[2])
    (paths.home / "pinned").symlink_to(Path("releases") / made[3])
    newer = [promote_fake(paths, "n0", keep=2)]
    assert list_releases(paths) == [made[2], made[3], newer[0]] and champion_weights(paths) == "n0"
    newer.append(promote_fake(paths, "n1", keep=2))
    assert list_releases(paths) == [made[3], newer[0], newer[1]] and champion_weights(paths) == "n1"
    (paths.home / "pinned").unlink()
    assert prune_releases(paths, 1) == [made[3]]
    assert list_releases(paths) == newer

    # The champion survives a prune even when it is the oldest release.
    rollback("demo")
    assert current_release(paths) == newer[0] and prune_releases(paths, 1) == []
    last = promote_fake(paths, "n2", keep=1)
    assert list_releases(paths) == [newer[0], last]  # n1 pruned: n0 is the one the new champion replaced
    assert sorted(p.name for p in paths.releases.iterdir()) == [newer[0], last]  # nothing half deleted left


def test_history_names_only_existing_releases_after_pruning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    made = [promote_fake(paths, f"w{i}", keep=1) for i in range(3)]
    rollback("demo")
    made.append(promote_fake(paths, "w3", keep=1))
    records = read_history(paths.history)
    assert [r["decision"] for r in records] == [Decision.PROMOTED] * 3 + [
        Decision.ROLLED_BACK,
        Decision.PROMOTED,
    ]  # every record stays
    kept = set(list_releases(paths))
    assert kept == {made[1], made[3]}
    assert {name for r in records for name in named_releases(r)} <= kept
    assert records[0]["release"] is None and records[0]["release_pruned"]
    assert records[1]["champion"] == {"release": None, "release_pruned": records[0]["release_pruned"]}
    assert records[3]["previous"] is None and records[3]["release"] == f"releases/{made[1]}"
    assert [r["data_hash"] for r in records if r["decision"] == Decision.PROMOTED] == ["w0", "w1", "w2", "w3"]
    # Nothing before the pruned one to roll back to past the champion's predecessor.
    assert rollback("demo")["release"] == f"releases/{made[1]}"
    with pytest.raises(RetrainError, match="nothing to roll back to|was pruned"):
        rollback("demo")


def test_releases_kept_come_from_params_serve_keep_releases(tmp_path):
    assert load_params(REPO / "params.yaml").serve.keep_releases == ServeConfig().keep_releases == 5
    assert parse_params({"serve": {"keep_releases": 2}}).serve.keep_releases == 2
    for bad in (0, -1, "3", 2.5, True):
        with pytest.raises(ValueError, match="keep_releases"):
            parse_params({"serve": {"keep_releases": bad}})


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

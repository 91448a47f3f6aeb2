"""The release registry of a dataset (flows/releases.py): promotion swaps the champion in one step, rollback
walks back through the recorded champions, pruning keeps the last N releases and never the champion, and a
damaged bundle is never promoted nor rolled back to."""

import json
import os
from pathlib import Path

import pytest

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
from selfmm.bundle import BundleError, verify_bundle, write_manifest
from tests.support.data import REPO


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
    record = read_history(paths.history)[-1]
    assert record == printed
    assert record["decision"] == Decision.ROLLED_BACK and record["release"] == f"releases/{first}"
    assert record["previous"] == f"releases/{second}"
    assert [r["decision"] for r in read_history(paths.history)] == [
        Decision.PROMOTED,
        Decision.PROMOTED,
        Decision.ROLLED_BACK,
    ]

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

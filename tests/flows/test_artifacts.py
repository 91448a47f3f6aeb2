"""The artifacts the flows publish, read back from a real Prefect server: keys stable per dataset (so the UI
keeps their history), the extraction summary and failures, the metrics tables, the retrain decision."""

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort

from flows import retrain as retrain_module
from flows.artifacts import artifact_key
from flows.extract import feature_extract
from flows.releases import Decision
from flows.retrain import retrain
from flows.train import evaluate_flow, train_flow
from tests.support.data import write_label_csv
from tests.support.synthetic import make_synthetic_store, make_text_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def published(key: str) -> list[Artifact]:
    """Every artifact under ``key``, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


def broken_dataset(root, n: int = 2):
    """A dataset folder whose clips are not media: listing it works, every clip fails to extract."""
    rows = []
    for i in range(n):
        (root / "Raw" / f"v{i}").mkdir(parents=True)
        (root / "Raw" / f"v{i}" / "0.mp4").write_bytes(b"not a video %d" % i)
        rows.append({"video_id": f"v{i}", "clip_id": "0", "text": "fine", "label": 0.5, "mode": "train"})
    write_label_csv(root, rows)
    return root


def test_keys_are_lowercase_letters_digits_and_dashes():
    assert artifact_key("My_Set.v2", "extract", "summary") == "my-set-v2-extract-summary"
    assert artifact_key("predict", "demo") == "predict-demo"


def test_extraction_publishes_its_summary_and_failures(tmp_path, monkeypatch, prefect_server):
    monkeypatch.chdir(tmp_path)
    dataset = broken_dataset(tmp_path / "My_Set")
    out = tmp_path / "features.h5"
    feature_extract(data=str(dataset), out=str(out), cache_dir=str(tmp_path / "cache"), max_failure_fraction=1.0)
    [summary] = published("my-set-extract-summary")
    assert summary.type == "markdown"
    assert "| clips in the store | 0 |" in str(summary.data) and "| clips failed | 2 |" in str(summary.data)
    assert f"`{out}`" in str(summary.data)
    [failures] = published("my-set-extract-failures")
    rows = json.loads(str(failures.data))
    assert sorted(r["video"] for r in rows) == ["v0", "v1"] and all(r["error"] for r in rows)


def test_train_and_evaluate_publish_their_metrics_under_one_key_per_dataset(tmp_path, monkeypatch, prefect_server):
    monkeypatch.chdir(tmp_path)  # no params.yaml: the defaults and the overrides
    text_model = str(make_text_model(tmp_path / "bert"))
    store = make_synthetic_store(tmp_path / "store.h5", text_model, sizes={"train": 24, "valid": 8, "test": 8})
    overrides = {"text_model": text_model, "seeds": [3, 4], "batch_size": 8, "max_epochs": 1, "early_stop": 1}
    earlier = {a.id for key in ("synthetic-train-metrics", "synthetic-metrics") for a in published(key)}  # other tests'
    trained = train_flow(features=str(store), out=str(tmp_path / "model"), overrides=overrides)
    [table] = [a for a in published("synthetic-train-metrics") if a.id not in earlier]
    rows = {r["metric"]: r for r in json.loads(str(table.data))}
    assert rows["MAE"]["mean"] == pytest.approx(trained["mean"]["MAE"])
    assert {"seed 3", "seed 4", "std"} <= set(rows["MAE"])

    for _ in range(2):  # a second evaluation is a second version under the same key
        report = evaluate_flow(model=str(tmp_path / "model"), features=str(store), report_dir=str(tmp_path / "r"))
    versions = [a for a in published("synthetic-metrics") if a.id not in earlier]
    assert len(versions) == 2 and versions[0].flow_run_id != versions[1].flow_run_id
    rows = {r["metric"]: r for r in json.loads(str(versions[0].data))}
    assert rows["MAE"]["seed 4"] == pytest.approx(report["seeds"]["4"]["MAE"])
    assert "report.html" in str(versions[0].description)


def test_retrain_publishes_each_decision_with_both_maes(tmp_path, monkeypatch, prefect_server):
    """The decision step itself (DVC, training) is tests/flows/test_retrain.py's; here it is given."""
    monkeypatch.chdir(tmp_path)
    broken_dataset(tmp_path / "data" / "art")
    (tmp_path / "params.yaml").write_text("build:\n  art: train\n")  # dvc.yaml would have its stages
    decided = {
        "decision": Decision.KEPT,
        "reason": "valid MAE 0.5000 is not below the champion's 0.4000",
        "challenger": {"valid": {"MAE": 0.5}},
        "champion": {"valid": {"MAE": 0.4}},
    }
    monkeypatch.setattr(retrain_module, "challenge", lambda paths, stages: decided)
    retrain(dataset="art")

    def fail(paths, stages):
        raise RuntimeError("dvc repro failed")

    monkeypatch.setattr(retrain_module, "challenge", fail)
    with pytest.raises(RuntimeError):
        retrain(dataset="art", force=True)
    failed, kept = published("art-retrain-decision")
    assert "Retrain of art: kept" in str(kept.data)
    assert "| challenger | 0.5000 |" in str(kept.data) and "| champion | 0.4000 |" in str(kept.data)
    assert "Retrain of art: failed" in str(failed.data) and "dvc repro failed" in str(failed.data)

"""The predict flow (deployment predict/<dataset>): the champion on data/<dataset>/incoming/, with a real Prefect
server: predictions.csv and a table artifact with one row per clip, failures included."""

import csv
import shutil
from typing import cast

import pytest
from prefect.artifacts import Artifact

from features.types import DatasetError
from flows.deployments import build_deployments, served_datasets
from flows.params import RunConfig, parse_params
from flows.predict import predict_flow
from flows.releases import DatasetPaths, promote


def test_predict_flow_writes_predictions_and_a_table_artifact(real_models, tmp_path, monkeypatch, prefect_server):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    shutil.copytree(real_models.first, paths.model)
    promote(paths, {"time": "t0"})
    incoming = tmp_path / "data" / "demo" / "incoming"
    incoming.mkdir(parents=True)
    shutil.copy(real_models.short_clip, incoming / "a.mp4")
    (incoming / "b.mp4").write_bytes(b"broken")
    result = predict_flow(dataset="demo")
    assert (result["predicted"], result["failed"]) == (1, 1)
    with open(paths.home / "predictions.csv", newline="") as f:
        rows = {r["clip"]: r for r in csv.DictReader(f)}
    assert rows["a.mp4"]["error"] == "" and rows["b.mp4"]["error"].startswith("decode: ")
    artifact = cast(Artifact | None, Artifact.get("predict-demo"))  # sync here: no event loop runs
    assert artifact is not None and "a.mp4" in str(artifact.data) and "b.mp4" in str(artifact.data)

    with pytest.raises(DatasetError, match="data/nope/incoming: no such folder"):
        predict_flow(dataset="nope")


def test_predict_flow_with_subtitles_writes_a_timeline(
    real_models, long_mosi_video, tmp_path, monkeypatch, prefect_server
):
    monkeypatch.chdir(tmp_path)
    paths = DatasetPaths("demo")
    shutil.copytree(real_models.first, paths.model)
    promote(paths, {"time": "t0"})
    result = predict_flow(dataset="demo", incoming=str(long_mosi_video.path), subtitles=str(long_mosi_video.subtitles))
    assert (result["segments"], result["failed"]) == (3, 0)
    assert result["timeline.csv"] == str(paths.home / "timelines" / "long.mkv" / "timeline.csv")
    with open(result["timeline.csv"], newline="") as f:
        assert [r["text"] for r in csv.DictReader(f)] == [p.text for p in long_mosi_video.parts]
    artifact = cast(Artifact | None, Artifact.get("timeline-demo"))
    assert artifact is not None and long_mosi_video.parts[1].text in str(artifact.data)
    with pytest.raises(DatasetError, match="no such media file"):
        predict_flow(dataset="demo", incoming=str(tmp_path / "none.mp4"), subtitles=str(long_mosi_video.subtitles))


def test_every_served_dataset_gets_a_predict_deployment():
    params = parse_params({"serve": {"datasets": {"demo": {"train_section": "train"}}}})
    deployments = build_deployments(served_datasets(params), RunConfig())
    assert {d.flow_name for d in deployments} >= {"predict"}
    predict = next(d for d in deployments if d.flow_name == "predict")
    assert predict.name == "demo" and predict.parameters == {"dataset": "demo"}

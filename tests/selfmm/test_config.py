"""The presets are written as what differs from the defaults (or from the preset they build on), so a preset file
reads as the list of its choices."""

from selfmm.config import MOSI, PRESETS, SIMS, TrainConfig


def test_no_preset_restates_a_value_it_would_get_anyway():
    defaults = TrainConfig().to_dict()
    builds_on = {"mosi": {}, "sims": {}, "mosei": MOSI, "demo": SIMS}
    assert set(builds_on) == set(PRESETS)
    for name, base in builds_on.items():
        inherited = {**defaults, **base}
        own = {key: value for key, value in PRESETS[name].items() if key not in base or base[key] != value}
        restated = sorted(key for key, value in own.items() if inherited[key] == value)
        assert not restated, f"preset {name} restates {restated}"

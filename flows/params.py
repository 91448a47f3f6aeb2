"""params.yaml: the one file every result depends on. Sections: extract, run, demo, train, serve."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from features.config import ExtractConfig

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The params file as a dict; a missing default file means all defaults, a missing named file is an error."""
    path = Path(path) if path else DEFAULT_PARAMS
    if not path.is_file():
        if path == DEFAULT_PARAMS:
            return {}
        raise FileNotFoundError(f"{path}: no such params file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    return data


def deep_update(base: dict, overrides: dict | None) -> dict:
    """A copy of ``base`` with ``overrides`` merged in, nested dicts merged key by key."""
    out = dict(base)
    for key, value in (overrides or {}).items():
        out[key] = deep_update(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["face.fps=5", "audio.feature_set=ComParE_2016"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def extract_config(params: dict, overrides: dict | None = None) -> ExtractConfig:
    return ExtractConfig.from_dict(deep_update(params.get("extract") or {}, overrides))

"""Dataset layouts on disk -> the source videos to decode and the labelled clips cut from each.

``load_dataset`` reads any layout we support: the MMSA layout (``mmsa_layout``), the CMU releases with whole
videos and segment times (``cmu``, with the standard ``folds``). ``demo/`` generates the built-in demo corpus.
"""

from __future__ import annotations

from pathlib import Path

from features.datasets.cmu import detect_cmu, load_cmu
from features.datasets.mmsa_layout import load_mmsa, reject_out_of_range
from features.types import DatasetError, DatasetSpec, label_bound

__all__ = ["load_dataset", "load_mmsa", "load_cmu", "DatasetSpec", "DatasetError"]


def load_dataset(root: str | Path, name: str | None = None) -> DatasetSpec:
    """Read a dataset folder in any supported layout: a CMU segment file selects the CMU layout
    (features.datasets.cmu), otherwise the MMSA layout. Labels out of range for a known dataset are rejected."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    if detect_cmu(root) is not None:
        return load_cmu(root, name)
    spec = load_mmsa(root, name)
    return reject_out_of_range(spec, label_bound(spec.name))

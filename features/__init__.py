"""Raw media -> features, as a plain library (no Prefect, no DVC, no training code).

The surface most users need: read a dataset folder (``load_dataset``), choose the extraction settings
(``ExtractConfig``) and read the HDF5 feature store that extraction writes (``FeatureStore``). They load on
first use, so importing one light module (``features.errors``) does not pull openSMILE, pandas and h5py in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.config import ExtractConfig
    from features.datasets import load_dataset
    from features.store import FeatureStore

__all__ = ["ExtractConfig", "FeatureStore", "load_dataset"]
_HOMES = {"ExtractConfig": "features.config", "FeatureStore": "features.store", "load_dataset": "features.datasets"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'features' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)

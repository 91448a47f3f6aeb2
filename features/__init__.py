"""Raw media -> features, as a plain library (no Prefect, no DVC, no training code).

The surface most users need: read a dataset folder (``load_dataset``), choose the extraction settings
(``ExtractConfig``) and read the HDF5 feature store that extraction writes (``FeatureStore``).
"""

from features.config import ExtractConfig
from features.datasets import load_dataset
from features.store import FeatureStore

__all__ = ["ExtractConfig", "FeatureStore", "load_dataset"]

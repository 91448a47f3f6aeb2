"""The trained-model bundle: one folder that holds everything evaluation and prediction need.

    bundle.json              format, training config, feature widths, the store's feature-config hash,
                             its full provenance (extractor configs and feature names per modality),
                             seeds, the selected seed, per-seed validation loss
    text_model/              the BERT's config.json and its tokenizer files (no weights: they are in each
                             seed's state dict), so raw text is tokenised and the BERT rebuilt offline
    weights/seed_<s>.safetensors   the best-on-validation state dict of every seed

Every seed's weights are kept, so ``evaluate`` reports per-seed metrics and mean +- std as training did.
Single-model prediction uses the *selected* seed: the one with the lowest validation loss (never test).
Weights are safetensors, so loading never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PretrainedConfig

from features import portable_math
from features.errors import PipelineError
from features.files import atomic_path, atomic_write_text
from features.store import FeatureStore
from features.text_models import local_files_only, resolve_model
from features.types import ModalityProvenance
from selfmm.config import TrainConfig
from selfmm.model import SelfMM, text_encoder_from_config

FORMAT_VERSION = 1
INFO_FILE = "bundle.json"
# The columns of the trainer's history/seed_<s>.csv, which the report reads: the losses per epoch and the mean
# |delta| of each task that ULGM's label rule worked on (NaN in epoch 1, which generates no labels).
HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "delta_M", "delta_T", "delta_A", "delta_V"]


class BundleError(PipelineError):
    """A bundle that is missing, broken, or does not fit the features it is used with."""


@dataclass
class Bundle:
    path: Path
    info: dict[str, Any]
    config: TrainConfig

    @property
    def seeds(self) -> list[int]:
        return list(self.info["seeds"])

    @property
    def selected_seed(self) -> int:
        return int(self.info["selected_seed"])

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.info["feature_dims"])

    @property
    def provenance(self) -> dict[str, dict]:
        """Per modality: extractor, version, config, config_hash, feature_names (as in the store)."""
        return self.info["provenance"]

    @property
    def text_model_dir(self) -> Path:
        """A folder ``AutoTokenizer.from_pretrained`` reads: the tokenizer the features were made with."""
        return self.path / "text_model"

    def model(self, seed: int | None = None) -> SelfMM:
        """The trained network of one seed (default: the selected seed), in eval mode on the CPU."""
        seed = self.selected_seed if seed is None else seed
        if seed not in self.seeds:
            raise BundleError(f"{self.path}: no weights for seed {seed} (has {self.seeds})")
        encoder = text_encoder_from_config(str(self.text_model_dir))
        model = SelfMM(self.config, self.dims["audio"], self.dims["vision"], encoder)
        model.load_state_dict(load_file(self.path / "weights" / f"seed_{seed}.safetensors"))
        return model.eval()

    def check_features(self, store: FeatureStore) -> None:
        """Refuse a store extracted otherwise than the training features (another config, feature code,
        library version or model file)."""
        if self.info["feature_config_hash"] != store.feature_config_hash:
            self._refuse(
                str(store.path),
                self.differences(store.provenance),
                f"feature hash {store.feature_config_hash!r}, trained on {self.info['feature_config_hash']!r}",
            )

    def check_provenance(self, provenance: dict[str, ModalityProvenance], what: str) -> None:
        """Refuse features made here (``selfmm predict``) by other extractors than the training features."""
        differences = self.differences(provenance)
        if differences:
            self._refuse(what, differences)

    def differences(self, provenance: dict[str, ModalityProvenance]) -> list[str]:
        """``modality.config|identity.key: trained X, given Y`` for each setting or identity that differs."""
        out = []
        for modality, trained in self.provenance.items():
            given = provenance.get(modality)
            if given is None:
                out.append(f"{modality}: missing")
                continue
            for part, ours in (("config", given.config), ("identity", given.identity)):
                theirs = trained.get(part, {})
                out += [
                    f"{modality}.{part}.{key}: trained {theirs.get(key)!r}, given {ours.get(key)!r}"
                    for key in sorted(set(theirs) | set(ours))
                    if theirs.get(key) != ours.get(key)
                ]
        return out

    def _refuse(self, what: str, differences: list[str], fallback: str = "") -> None:
        remedy = "re-extract with the bundle's provenance, or retrain"
        if any(".identity.float_maths:" in difference for difference in differences):
            remedy = (
                f"extract through `selfmm`, which preloads the portable float maths ({portable_math.library_path()}), "
                "or start Python with LD_PRELOAD naming it; or retrain"
            )
        raise BundleError(
            f"{what} was made otherwise than the features the model in {self.path} was trained on "
            f"({'; '.join(differences) or fallback}): {remedy}"
        )


def save_weights(path: Path, seed: int, state: dict[str, torch.Tensor]) -> None:
    """One seed's state dict, written as soon as that seed is done (not all seeds held in memory)."""
    (path / "weights").mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "weights" / f"seed_{seed}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)


def save_bundle(
    path: Path,
    config: TrainConfig,
    store: FeatureStore,
    dims: dict[str, int],
    text_config: PretrainedConfig,
    valid_loss: dict[int, float],
) -> Bundle:
    """Complete a bundle whose seeds' weights are saved: the selected seed has the lowest validation loss."""
    missing = [s for s in valid_loss if not (path / "weights" / f"seed_{s}.safetensors").is_file()]
    if missing:
        raise BundleError(f"{path}: no saved weights for seed(s) {missing}")
    text_dir = path / "text_model"
    text_config.save_pretrained(text_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.text_model), local_files_only=local_files_only())
    tokenizer.save_pretrained(text_dir)
    info = {
        "format": FORMAT_VERSION,
        "config": config.to_dict(),
        "text_model": config.text_model,
        "feature_dims": dims,
        "feature_config_hash": store.feature_config_hash,
        "dataset": store.dataset,
        "provenance": {m: asdict(p) for m, p in store.provenance.items()},
        "seeds": list(valid_loss),
        "selected_seed": min(valid_loss, key=valid_loss.__getitem__),
        "valid_loss": {str(s): v for s, v in valid_loss.items()},
    }
    atomic_write_text(path / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))
    return Bundle(path, info, config)


def load_bundle(path: str | Path, features: FeatureStore | None = None) -> Bundle:
    """Read a bundle; with ``features``, also check they were extracted as the training features were."""
    path = Path(path)
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: not a model bundle (no {INFO_FILE})") from None
    if info.get("format") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {info.get('format')!r}, this code reads {FORMAT_VERSION}")
    bundle = Bundle(path, info, TrainConfig.from_dict(info["config"]))
    if features is not None:
        bundle.check_features(features)
    return bundle

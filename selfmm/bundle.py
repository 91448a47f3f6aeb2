"""The trained-model bundle: one folder that holds everything evaluation and prediction need.

    bundle.json              format, model config (what builds the network), training config, feature widths,
                             the store's feature-config hash, its full provenance (extractor configs and feature
                             names per modality), seeds, the selected seed, per-seed validation loss, the model card
                             (selfmm/model_card.py: what it was trained on, its test metrics)
    text_model/              the BERT's config.json and its tokenizer files (no weights: they are in each
                             seed's state dict), so raw text is tokenised and the BERT rebuilt offline
    weights/seed_<s>.safetensors   the best-on-validation state dict of every seed
    manifest.json            the size and SHA-256 of every other file, written last (see ``write_manifest``)

Every seed's weights are kept, so ``evaluate`` reports per-seed metrics and mean +- std as training did.
Single-model prediction uses the *selected* seed: the one with the lowest validation loss (never test).
Weights are safetensors, so loading never unpickles anything; safetensors has no checksum, so the manifest is
what makes a flipped byte in a weights file an error that names the file rather than a model that silently
predicts otherwise. ``load_bundle`` checks it every time (``verify_bundle``): every listed file present with its
size and digest, and no unlisted file where the loader would read it (``weights/``, ``text_model/``, whose every
file a tokenizer may pick up). Files added beside the bundle's own (a release's ``champion.json``) are not its
business. A bundle of format 1, from before manifests, still loads, with a warning and ``verified`` False; one
of format 1 or 2, which named vision as MMSA does (video), is read through ``RENAMED`` and ``RENAMED_WEIGHTS``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PretrainedConfig

from features import portable_math
from features.config import stable_hash
from features.errors import PipelineError
from features.files import TEMP_MARK, atomic_path, atomic_write_text, file_sha256
from features.hash_index import Stamp, file_stamp, settled_sha256
from features.store import FeatureStore
from features.text_models import local_files_only, resolve_model
from features.types import ModalityProvenance
from selfmm.config import RENAMED, ModelConfig, TrainConfig
from selfmm.model import SelfMM
from selfmm.model_card import ModelCard
from selfmm.text_encoder import text_encoder_from_config

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: "vision" names and the ModelConfig. 2: has a manifest. 1: made before manifests, unverified
# Formats 1 and 2 spelled the vision modality as MMSA does ("video"): they are read through config.RENAMED (config
# keys) and these state-dict key prefixes, older -> ours.
RENAMED_WEIGHTS = {"video_model.": "vision_model."}
INFO_FILE = "bundle.json"
MANIFEST_FILE = "manifest.json"
LOADED_FOLDERS = ("weights", "text_model")  # an unlisted file here would be read: it makes the bundle damaged
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
    verified: bool = False  # every file checked against the manifest (False: a format-1 bundle, or not sealed yet)

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
    def card(self) -> ModelCard:
        return ModelCard.from_dict(self.info.get("card"))

    def summary(self) -> dict[str, Any]:
        """What ``selfmm info`` and ``GET /model`` say of the bundle: its card first, then what it is made of."""
        return {
            "path": str(self.path),
            "format": self.info["format"],
            "verified": self.verified,
            "card": self.card.describe(),
            "dataset": self.info.get("dataset"),
            "seeds": self.seeds,
            "selected_seed": self.selected_seed,
            "feature_config_hash": self.info["feature_config_hash"],
            "provenance": self.provenance,
            "config": self.info["config"],
        }

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
        model = SelfMM(ModelConfig.from_dict(self.info["model"]), self.dims["audio"], self.dims["vision"], encoder)
        state = load_weights(self.path, seed)
        if self.info["format"] < 3:
            state = {_renamed(key, RENAMED_WEIGHTS): value for key, value in state.items()}
        model.load_state_dict(state)
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
    """One seed's state dict: the trainer writes each better epoch's weights here as training goes."""
    (path / "weights").mkdir(parents=True, exist_ok=True)
    with atomic_path(_weights_file(path, seed)) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)


def load_weights(path: Path, seed: int) -> dict[str, torch.Tensor]:
    return load_file(_weights_file(path, seed))


def _weights_file(path: Path, seed: int) -> Path:
    return path / "weights" / f"seed_{seed}.safetensors"


def save_bundle(
    path: Path,
    config: TrainConfig,
    store: FeatureStore,
    dims: dict[str, int],
    text_config: PretrainedConfig,
    valid_loss: dict[int, float],
    card: ModelCard,
) -> Bundle:
    """Complete a bundle whose seeds' weights are saved: the selected seed has the lowest validation loss."""
    missing = [s for s in valid_loss if not _weights_file(path, s).is_file()]
    if missing:
        raise BundleError(f"{path}: no saved weights for seed(s) {missing}")
    text_dir = path / "text_model"
    text_config.save_pretrained(text_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.text_model), local_files_only=local_files_only())
    tokenizer.save_pretrained(text_dir)
    info = {
        "format": FORMAT_VERSION,
        "model": config.model.to_dict(),
        "config": config.to_dict(),
        "text_model": config.text_model,
        "feature_dims": dims,
        "feature_config_hash": store.feature_config_hash,
        "dataset": store.dataset,
        "provenance": {m: asdict(p) for m, p in store.provenance.items()},
        "seeds": list(valid_loss),
        "selected_seed": min(valid_loss, key=valid_loss.__getitem__),
        "valid_loss": {str(s): v for s, v in valid_loss.items()},
        "card": card.to_dict(),
    }
    atomic_write_text(path / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))
    return Bundle(path, info, config)


def load_bundle(path: str | Path, features: FeatureStore | None = None) -> Bundle:
    """Read a bundle whose files verify against its manifest; with ``features``, also check they were extracted
    as the training features were."""
    path = Path(path)
    verified = verify_bundle(path)
    info = _read_info(path)
    if info.get("format") not in range(1, FORMAT_VERSION + 1):
        raise BundleError(f"{path}: bundle format {info.get('format')!r}, this code reads 1 to {FORMAT_VERSION}")
    if info["format"] < 3:  # in memory only: the files stay as they were written (and as the manifest lists them)
        info["config"] = {_renamed(key, RENAMED): value for key, value in info["config"].items()}
        info["model"] = TrainConfig.from_dict(info["config"], f"{path / INFO_FILE}: config").model.to_dict()
    bundle = Bundle(path, info, TrainConfig.from_dict(info["config"], f"{path / INFO_FILE}: config"), verified)
    if features is not None:
        bundle.check_features(features)
    return bundle


def write_manifest(path: Path) -> None:
    """Seal a complete bundle: the size and SHA-256 of each of its files, written last and atomically, so a bundle
    whose writing stopped halfway, or whose bytes changed since, never verifies."""
    files = {rel: {"bytes": file.stat().st_size, "sha256": file_sha256(file)} for rel, file in _files(path).items()}
    body = {"format": 1, "files": files}
    atomic_write_text(path / MANIFEST_FILE, json.dumps({**body, "hash": stable_hash(body)}, indent=2))


def verify_bundle(path: Path) -> bool:
    """Check every file of the bundle at ``path`` against its manifest: True when they all match; False for a
    format-1 bundle, which has none (logged). BundleError naming each damaged, missing or unlisted file."""
    manifest = _read_manifest(path)
    if manifest is None:
        return _unsealed(path)
    present = _files(path)
    problems = [
        problem
        for rel, expected in sorted(manifest.items())
        if (problem := _file_problem(rel, present.get(rel), expected))
    ]
    problems += [
        f"{rel}: not in the manifest"
        for rel in sorted(set(present) - set(manifest))
        if rel.split("/")[0] in LOADED_FOLDERS
    ]
    if problems:
        raise BundleError(f"{path}: damaged bundle ({'; '.join(problems)}): restore it from a good copy, or retrain")
    return True


def _files(path: Path) -> dict[str, Path]:
    """The bundle's files by path relative to it (POSIX), leaving out the manifest and temporary files."""
    return {
        file.relative_to(path).as_posix(): file
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.name != MANIFEST_FILE and TEMP_MARK not in file.name
    }


def _renamed(key: str, renames: dict[str, str]) -> str:
    """``key`` with an older name (or name prefix) in ``renames`` replaced by ours."""
    return next((new + key.removeprefix(old) for old, new in renames.items() if key.startswith(old)), key)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / INFO_FILE).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: not a model bundle (no {INFO_FILE})") from None


def _read_manifest(path: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's files, once its own digest (over its content) shows it is whole; None when there is none."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_bytes())
        body = {"format": manifest["format"], "files": manifest["files"]}
        whole = manifest["hash"] == stable_hash(body)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(
            f"{path}: damaged bundle ({MANIFEST_FILE}: unreadable, {err}): restore it, or retrain"
        ) from None
    if not whole:
        raise BundleError(
            f"{path}: damaged bundle ({MANIFEST_FILE}: its content does not match its own hash): restore it, or retrain"
        )
    return manifest["files"]


def _unsealed(path: Path) -> bool:
    """A bundle without a manifest: format 1 (older code) loads, visibly unverified; a newer one lost it or was
    never finished, and is refused."""
    if _read_info(path).get("format") == 1:
        log.warning(
            "%s: a format-1 bundle, without %s: loaded UNVERIFIED (retrain to get one that verifies)",
            path,
            MANIFEST_FILE,
        )
        return False
    raise BundleError(
        f"{path}: damaged bundle ({MANIFEST_FILE}: missing, so it was never finished or lost it): retrain"
    )


def _file_problem(rel: str, file: Path | None, expected: dict[str, Any]) -> str | None:
    """What is wrong with one listed file (missing, another size, another digest), or None."""
    if file is None:
        return f"{rel}: missing"
    stat = file.stat()
    if stat.st_size != expected["bytes"]:
        return f"{rel}: {stat.st_size} bytes, the manifest says {expected['bytes']}"
    if _sha256(file.resolve(), stat) != expected["sha256"]:
        return f"{rel}: content differs from the manifest (SHA-256 mismatch)"
    return None


_digests: dict[Path, tuple[Stamp, str]] = {}  # file -> (its stamp, sha256), for this process's life


def _sha256(file: Path, stat: os.stat_result) -> str:
    """The file's SHA-256, reused from an earlier check while its stamp (size, mtime, inode) is the same: a service
    that switches back to a release, or retries one that failed, does not read hundreds of MB again."""
    stamp = file_stamp(stat)
    known = _digests.get(file)
    if known is not None and known[0] == stamp:
        return known[1]
    digest, settled = settled_sha256(file, stamp)
    if settled:
        _digests[file] = (stamp, digest)
    return digest

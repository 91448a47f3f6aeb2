"""What the flows publish to the Prefect UI as artifacts. Keys are stable per dataset (``demo-metrics``,
``demo-extract-summary``, ...), so the UI's Artifacts page shows each one's history over runs; every call
must run inside a flow, whose run the artifact is linked to.

| key | flow | kind |
|---|---|---|
| ``<d>-extract-summary`` | feature-extract | markdown: clips, cached, extracted, failed, store path |
| ``<d>-extract-failures`` | feature-extract | table: one row per failed clip |
| ``<d>-train-metrics`` | train | table: test metrics per seed, mean, std |
| ``<d>-metrics`` | evaluate | table: metrics of the evaluated split per seed, mean, std |
| ``<d>-retrain-decision`` | retrain | markdown: promoted, kept or failed, with both validation MAEs |
| ``predict-<d>`` | predict | table: one row per predicted clip (flows/predict.py) |
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from features.store import FeatureStore


def artifact_key(*parts: str) -> str:
    """The parts joined by dashes in Prefect's key alphabet: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def store_dataset(features: str) -> str:
    """The dataset a feature store was extracted from (its file name for a store that does not say)."""
    with FeatureStore(features) as store:
        return store.dataset or store.path.stem


def _cell(value: object) -> object:
    """NaN -> None: artifacts are JSON, which has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def publish_metrics(
    key: str,
    per_seed: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float],
    std: Mapping[str, float],
    description: str,
) -> None:
    """A table with one row per metric: its value for each seed, the mean and the std over seeds."""
    rows = [
        {"metric": name, **{f"seed {s}": _cell(m[name]) for s, m in per_seed.items()}}
        | {"mean": _cell(mean[name]), "std": _cell(std[name])}
        for name in mean
    ]
    create_table_artifact(rows, key=key, description=description)


def publish_extraction(
    dataset: str, store: str, clips: int, sources: Mapping[str, int], failures: list[dict[str, str]]
) -> None:
    """The feature-extract flow's summary (markdown: clips in the store, source videos cached, extracted and
    failed, failed clips, the store's path) and its failures (a table, one row per failed clip)."""
    lines = [
        f"# Features of {dataset}",
        "",
        "| | |",
        "|---|---|",
        f"| clips in the store | {clips} |",
        *(f"| source videos {status} | {n} |" for status, n in sources.items()),
        f"| clips failed | {len(failures)} |",
        f"| store | `{store}` |",
    ]
    create_markdown_artifact("\n".join(lines), key=artifact_key(dataset, "extract", "summary"))
    create_table_artifact(
        failures, key=artifact_key(dataset, "extract", "failures"), description=f"{len(failures)} clips failed"
    )


def publish_decision(dataset: str, record: Mapping) -> None:
    """The retrain flow's decision with the challenger's and the champion's validation MAE."""
    champion = (record.get("champion") or {}).get("valid", {}).get("MAE")
    challenger = (record.get("challenger") or {}).get("valid", {}).get("MAE")
    lines = [
        f"# Retrain of {dataset}: {record['decision']}",
        "",
        f"{record.get('reason') or record.get('error', '')}",
        "",
        "| model | valid MAE |",
        "|---|---|",
        f"| challenger | {_mae(challenger)} |",
        f"| champion | {_mae(champion)} |",
    ]
    create_markdown_artifact("\n".join(lines), key=artifact_key(dataset, "retrain", "decision"))


def _mae(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"

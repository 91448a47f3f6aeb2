"""The evaluation report of a trained bundle: metrics per seed, a trivial baseline, how well ULGM's generated
unimodal labels recover the true ones, the CSV tables DVC plots, and report.html (``selfmm.report_html``).

Written by ``selfmm evaluate --report DIR``; ``metrics.json`` there is what ``dvc metrics show`` reads.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from features.files import atomic_open, atomic_write_text
from features.store import FeatureStore
from features.types import UNIMODAL
from selfmm.bundle import HISTORY_COLUMNS, load_bundle
from selfmm.metrics import compute_metrics, mean_std
from selfmm.predict import evaluate, predict_store
from selfmm.report_html import write_html_report


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def train_mean_baseline(store: FeatureStore, split: str, family: str) -> dict[str, float]:
    """Metrics of predicting the training split's mean label for every clip: the bar any model must clear."""
    train = np.array(list(store.read_labels("train").values()))
    true = np.array(list(store.read_labels(split).values()))
    metrics = compute_metrics(family, np.full_like(true, train.mean()), true)
    metrics["Corr"] = math.nan  # a constant has no correlation (rounding makes np.corrcoef return ~1e-17)
    return metrics


def read_generated_labels(model_dir: Path, seed: int) -> dict[str, dict[str, float]]:
    """Clip key -> ``label_T/A/V`` of one seed's training run after its best epoch."""
    with open(model_dir / "unimodal_labels" / f"seed_{seed}.csv", newline="") as f:
        return {row["key"]: {m: float(row[f"label_{m}"]) for m in UNIMODAL} for row in csv.DictReader(f)}


def true_labels(store: FeatureStore, split: str = "train") -> dict[str, dict[str, float]]:
    """Label name (``label``, ``label_T/A/V``) -> clip key -> value, read once from the store's attributes."""
    return {name: store.read_labels(split, name) for name in ["label", *(f"label_{m}" for m in UNIMODAL)]}


def sign_agreement(x: np.ndarray, truth: np.ndarray) -> float:
    """Share of the clips with a non-zero true label whose ``x`` has the same sign (x = 0 agrees with neither)."""
    nonzero = truth != 0
    return float(np.mean(np.sign(x[nonzero]) == np.sign(truth[nonzero]))) if nonzero.any() else math.nan


def unimodal_recovery(
    truth: dict[str, dict[str, float]], generated: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per modality, how much of the true unimodal label y_s the generated label g_s holds, with what the
    multimodal label y_m alone would give beside it. Needs true T/A/V labels (a modality without is left out).

    - ``generated``, ``multimodal``: Pearson r of g_s and of y_m with y_s;
    - ``offset``: r(g_s - y_m, y_s - y_m), whether the label moved away from y_m towards the truth: ULGM's actual
      claim. Unlike ``generated`` it does not reward a label that merely copies y_m, and it is stable over seeds;
    - ``sign_agreement``, ``sign_agreement_multimodal``: the share of clips whose g_s (y_m) has y_s's sign.
    """
    keys = [k for k in generated if k in truth["label"]]
    y_m = np.array([truth["label"][k] for k in keys])
    out = {}
    for m in UNIMODAL:
        y_s = np.array([truth[f"label_{m}"][k] for k in keys])
        if np.isnan(y_s).any():
            continue
        g_s = np.array([generated[k][m] for k in keys])
        out[m] = {
            "generated": pearson(g_s, y_s),
            "multimodal": pearson(y_m, y_s),
            "offset": pearson(g_s - y_m, y_s - y_m),
            "sign_agreement": sign_agreement(g_s, y_s),
            "sign_agreement_multimodal": sign_agreement(y_m, y_s),
        }
    return out


def recovery_over_seeds(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over seeds of each ``unimodal_recovery`` number, with its population std as ``<name>_std``."""
    out = {}
    for m in per_seed[0]:
        mean, std = mean_std([seed[m] for seed in per_seed])
        out[m] = {**mean, **{f"{name}_std": value for name, value in std.items()}}
    return out


def write_report(
    model_dir: str | Path, features: str | Path, out_dir: str | Path, split: str = "test", device: str = "auto"
) -> dict:
    """Evaluate every seed on ``split`` and write metrics.json, the plot tables and report.html with its figures
    into ``out_dir``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(model_dir, features, split, device)
    trained = load_bundle(model_dir).config
    seed = result["selected_seed"]
    seeds = [int(s) for s in result["seeds"]]
    predictions = predict_store(model_dir, features, split, seed=seed, device=device)
    with FeatureStore(features) as store:
        labels = store.read_labels(split)
        generated = {s: read_generated_labels(model_dir, s) for s in seeds}
        truth = true_labels(store)
        report = {
            "split": split,
            "clips": result["clips"],
            "seeds": result["seeds"],
            "mean": result["mean"],
            "std": result["std"],
            "baseline_train_mean": train_mean_baseline(store, split, result["metrics"]),
            "unimodal_recovery": recovery_over_seeds([unimodal_recovery(truth, generated[s]) for s in seeds]),
            "ulgm": trained.ulgm,
            "numerics": {"mode": trained.numerics, "threads": trained.threads},  # what decided the bits
        }
    _write_unimodal_table(out_dir / "unimodal_labels.csv", truth, generated[seed])
    _write_csv(
        out_dir / "ulgm_distances.csv",
        ["seed", *HISTORY_COLUMNS],
        [[s, *row] for s in seeds for row in _read_history(model_dir / "history" / f"seed_{s}.csv", HISTORY_COLUMNS)],
    )
    _write_csv(
        out_dir / "predictions.csv",
        ["key", "label", "predicted", "T", "A", "V"],
        [[k, labels[k], p["M"], p["T"], p["A"], p["V"]] for k, p in predictions.items()],
    )
    loss_columns = ["epoch", "train_loss", "valid_loss"]
    _write_csv(
        out_dir / "loss.csv", loss_columns, _read_history(model_dir / "history" / f"seed_{seed}.csv", loss_columns)
    )
    atomic_write_text(out_dir / "metrics.json", json.dumps(strict_json(report), indent=2, sort_keys=True))
    write_html_report(out_dir, report, model_dir, Path(features))
    return report


def _write_unimodal_table(
    path: Path, truth: dict[str, dict[str, float]], generated: dict[str, dict[str, float]]
) -> None:
    rows = [
        [key, truth["label"][key]] + [v for m in UNIMODAL for v in (truth[f"label_{m}"][key], gen[m])]
        for key, gen in generated.items()
    ]
    header = ["key", "label"] + [f"{kind}_{m}" for m in UNIMODAL for kind in ("true", "generated")]
    _write_csv(path, header, rows)


def _read_history(path: Path, columns: list[str]) -> list[list]:
    with open(path, newline="") as f:
        return [[row.get(c, "") for c in columns] for row in csv.DictReader(f)]  # "": made before the column was


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def strict_json(value):
    """NaN -> None, so metrics.json is strict JSON (dvc and jq refuse NaN)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

"""Evaluation metrics exactly as the reference defines them (MMSA's ``MetricsTop``), on the fused prediction y_M.

Values are fractions (0.8344), not the reference CSV's percentages (83.44), and are not rounded: the
reference rounds each seed's metrics to 4 decimals before averaging; presentation code may round.
A constant prediction makes ``Corr`` NaN, as ``np.corrcoef`` does in the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike


def _flat(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flat float arrays in the inputs' own precision (float32 stays float32): class edges such as 0.1 are compared
    at that precision, as the reference does, so a label stored as float32(0.1) is the 0.1 its annotator gave."""
    pred, true = np.asarray(pred), np.asarray(true)
    dtype = np.result_type(pred.dtype, true.dtype, np.float32)
    pred, true = pred.astype(dtype).reshape(-1), true.astype(dtype).reshape(-1)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"need equally many predictions and labels, at least one (got {pred.size}, {true.size})")
    return pred, true


def _corr(pred: np.ndarray, true: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(pred.astype(np.float64), true.astype(np.float64))[0, 1])


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred.astype(np.float64) - true.astype(np.float64))))


def _accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(pred == true)) if pred.size else float("nan")


def _weighted_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """sklearn's ``f1_score(true, pred, average="weighted")`` (the truth first: the argument order fixed in April
    2021), the same float operations in the same order, so the same bits (tests/selfmm/test_metrics.py). Written
    out because importing scikit-learn costs the training process about 100 MB of memory for this one function.

    Over the classes seen in either array: F1 = 2 tp / (true count + predicted count), 0 where both are 0;
    averaged weighted by each class's true count."""
    if not true.size:
        return float("nan")
    classes = np.unique(np.concatenate([true, pred]))
    tp = np.array([np.sum((true == c) & (pred == c)) for c in classes], dtype=np.int64)
    true_count = np.array([np.sum(true == c) for c in classes], dtype=np.int64)
    pred_count = np.array([np.sum(pred == c) for c in classes], dtype=np.int64)
    numerator, denominator = 2.0 * tp, (true_count + pred_count).astype(np.float64)  # counts: exact in float64
    f1 = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    return float(np.average(f1, weights=true_count))


def mosi_metrics(pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    """MOSI/MOSEI: Has0 (negative vs non-negative) and Non0 (zeros dropped) Acc-2 and F1, Acc-5 and Acc-7
    (clip, then round half to even), MAE and Pearson correlation on the unclipped values."""
    pred, true = _flat(pred, true)
    non0 = true != 0
    return {
        "Has0_acc_2": _accuracy(pred >= 0, true >= 0),
        "Has0_F1_score": _weighted_f1(true >= 0, pred >= 0),
        "Non0_acc_2": _accuracy(pred[non0] > 0, true[non0] > 0),
        "Non0_F1_score": _weighted_f1(true[non0] > 0, pred[non0] > 0),
        "Mult_acc_5": _accuracy(np.round(np.clip(pred, -2, 2)), np.round(np.clip(true, -2, 2))),
        "Mult_acc_7": _accuracy(np.round(np.clip(pred, -3, 3)), np.round(np.clip(true, -3, 3))),
        "MAE": _mae(pred, true),
        "Corr": _corr(pred, true),
    }


def class_indices(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class i for edges[i] < value <= edges[i+1] (left-open bins, as the reference's loops), with the edges in
    the values' precision."""
    return np.digitize(values, np.asarray(edges, dtype=values.dtype), right=True) - 1


SIMS_BINS = {
    "Mult_acc_2": [-1.01, 0.0, 1.01],  # [-1, 0] negative (0 counts as negative), (0, 1] positive
    "Mult_acc_3": [-1.01, -0.1, 0.1, 1.01],
    "Mult_acc_5": [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
}


def sims_metrics(pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    """SIMS: everything on values clipped to [-1, 1] first, MAE and Corr included."""
    pred, true = _flat(pred, true)
    pred, true = np.clip(pred, -1, 1), np.clip(true, -1, 1)
    out = {name: _accuracy(class_indices(pred, edges), class_indices(true, edges)) for name, edges in SIMS_BINS.items()}
    out["F1_score"] = _weighted_f1(
        class_indices(true, SIMS_BINS["Mult_acc_2"]), class_indices(pred, SIMS_BINS["Mult_acc_2"])
    )
    out["MAE"] = _mae(pred, true)
    out["Corr"] = _corr(pred, true)
    return out


METRICS: dict[str, Callable[[ArrayLike, ArrayLike], dict[str, float]]] = {
    "mosi": mosi_metrics,
    "sims": sims_metrics,
}


def compute_metrics(family: str, pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    if family not in METRICS:
        raise ValueError(f"unknown metric family {family!r}; choose from {', '.join(METRICS)}")
    return METRICS[family](pred, true)


def mean_std(per_seed: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population standard deviation of each metric over seeds, as the reference reports them."""
    names = list(per_seed[0])
    values = {name: np.array([m[name] for m in per_seed], dtype=np.float64) for name in names}
    return ({n: float(v.mean()) for n, v in values.items()}, {n: float(v.std()) for n, v in values.items()})

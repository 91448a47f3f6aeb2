"""The published Self-MM numbers (the AAAI 2021 paper, MMSA's results) as data, and a table putting ours beside them.

Values are fractions under the keys of ``selfmm.metrics`` (0.8344, not 83.44; MAE 0.7080, not 70.80), so they
compare directly with what ``compute_metrics`` returns. Two sources per dataset:

* ``mmsa``: MMSA ``results/result-stat.md`` since commit 9a87fa0 (2021-05-06): the mean of 5 seeds after a
  50-draw search selected on valid, with the hyper-parameters of our ``mosi``/``mosei``/``sims`` presets.
  This is the reproducible target.
* ``paper``: the AAAI 2021 paper, as re-cited by two independent tables (Acc-2 and F1 as Has0/Non0;
  no Acc-5/Acc-7). Its F1 predates MMSA's fix of the F1 argument order; its SIMS row is unverified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Source(str, Enum):
    MMSA = "mmsa"
    PAPER = "paper"


@dataclass(frozen=True)
class PublishedResult:
    dataset: str
    source: Source
    metrics: Mapping[str, float]  # fractions, keyed as selfmm.metrics
    citation: str
    note: str = ""


_MMSA = "MMSA results/result-stat.md @ 9a87fa0, mean of 5 seeds"
_PAPER = "Yu et al., AAAI 2021 (as re-cited), mean of 5 runs"

PUBLISHED: dict[str, tuple[PublishedResult, ...]] = {
    "mosi": (
        PublishedResult(
            "mosi",
            Source.MMSA,
            {
                "Has0_acc_2": 0.8344,
                "Has0_F1_score": 0.8336,
                "Non0_acc_2": 0.8546,
                "Non0_F1_score": 0.8543,
                "Mult_acc_5": 0.5347,
                "Mult_acc_7": 0.4667,
                "MAE": 0.7080,
                "Corr": 0.7963,
            },
            _MMSA,
        ),
        PublishedResult(
            "mosi",
            Source.PAPER,
            {
                "Has0_acc_2": 0.8400,
                "Has0_F1_score": 0.8442,
                "Non0_acc_2": 0.8598,
                "Non0_F1_score": 0.8595,
                "MAE": 0.713,
                "Corr": 0.798,
            },
            _PAPER,
            "F1 before the argument-order fix",
        ),
    ),
    "mosei": (
        PublishedResult(
            "mosei",
            Source.MMSA,
            {
                "Has0_acc_2": 0.8376,
                "Has0_F1_score": 0.8382,
                "Non0_acc_2": 0.8515,
                "Non0_F1_score": 0.8490,
                "Mult_acc_5": 0.5553,
                "Mult_acc_7": 0.5387,
                "MAE": 0.5309,
                "Corr": 0.7649,
            },
            _MMSA,
        ),
        PublishedResult(
            "mosei",
            Source.PAPER,
            {
                "Has0_acc_2": 0.8281,
                "Has0_F1_score": 0.8253,
                "Non0_acc_2": 0.8517,
                "Non0_F1_score": 0.8530,
                "MAE": 0.530,
                "Corr": 0.765,
            },
            _PAPER,
            "F1 before the argument-order fix",
        ),
    ),
    "sims": (
        PublishedResult(
            "sims",
            Source.MMSA,
            {
                "Mult_acc_2": 0.8004,
                "Mult_acc_3": 0.6547,
                "Mult_acc_5": 0.4153,
                "F1_score": 0.8044,
                "MAE": 0.4250,
                "Corr": 0.5952,
            },
            _MMSA,
        ),
        PublishedResult(
            "sims",
            Source.PAPER,
            {"Mult_acc_2": 0.8074, "F1_score": 0.8078, "MAE": 0.419, "Corr": 0.616},
            _PAPER,
            "unverified, approximate",
        ),
    ),
}

_PLAIN = ("MAE", "Corr")  # printed as decimals; every other metric is an accuracy or F1, printed in percent


def published(dataset: str) -> tuple[PublishedResult, ...]:
    """The published Self-MM results of a dataset (mosi, mosei, sims)."""
    try:
        return PUBLISHED[dataset.lower()]
    except KeyError:
        raise ValueError(f"no published numbers for {dataset!r}; known: {', '.join(PUBLISHED)}") from None


def format_value(name: str, value: float | None) -> str:
    """A metric as printed: percent with 2 decimals, or (MAE, Corr) a decimal with 4; '–' for none."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.4f}" if name in _PLAIN else f"{100 * value:.2f}"


def compare_table(dataset: str, ours: Mapping[str, float], ours_std: Mapping[str, float] | None = None) -> str:
    """A text table: one row per metric, our value (± std over seeds) beside each published source.

    Accuracies and F1 are in percent, MAE and Corr as decimals. A metric a source did not report shows '–';
    a dataset without published numbers (e.g. the demo corpus) gets ours alone, with a note saying so.
    """
    rows = PUBLISHED.get(dataset.lower(), ())
    names = list(dict.fromkeys([*(n for r in rows for n in r.metrics), *ours]))
    header = ["metric", "ours", *(f"{r.source.value}" for r in rows)]
    body = []
    for name in names:
        mine = format_value(name, ours.get(name))
        if ours_std and name in ours and not math.isnan(ours_std.get(name, math.nan)):
            mine += f" ± {format_value(name, ours_std[name])}"
        body.append([name, mine, *(format_value(name, r.metrics.get(name)) for r in rows)])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    ]
    notes = [f"{r.source.value}: {r.citation}" + (f" ({r.note})" if r.note else "") for r in rows] or [
        f"no published Self-MM numbers for {dataset!r} (known: {', '.join(PUBLISHED)})"
    ]
    return "\n".join([f"Self-MM on {dataset}: ours vs published", *lines, *notes])

"""The evaluation report as a page a person opens in a browser: ``report.html`` and its figures beside
metrics.json, drawn from the tables ``selfmm.report`` wrote there and from the bundle.

The page is self-contained: it loads nothing but the PNGs in its own folder (its Content-Security-Policy
forbids anything else), which dvc.yaml also lists as image plots. Everything here is a DVC output, so nothing
depends on the clock or the machine: the PNGs are drawn with matplotlib's default style at a fixed size and dpi,
without the software/date metadata matplotlib would embed, and the page names no time, host or absolute path
that was not given.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features.config import json_sha256
from features.files import atomic_open, atomic_write_text, file_sha256
from features.types import UNIMODAL_NAMES
from selfmm.metrics import SIMS_BINS, class_indices
from selfmm.model_card import ModelCard
from selfmm.published import PUBLISHED, format_value

FIGURES = {
    "loss": "loss_curves.png",
    "scatter": "predicted_vs_true.png",
    "confusion": "confusion_matrix.png",
    "unimodal": "unimodal_labels.png",
}
DPI = 100
# Only images from the page's own folder: a page that tried to load anything else would show it as missing.
POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
# Counts the figures the browser could show, so a page with a missing PNG says so (tests read it back).
IMAGE_CHECK = """window.addEventListener("load", () => {
  const images = [...document.images];
  const shown = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = `${shown}/${images.length}`;
  if (shown < images.length) document.getElementById("missing").hidden = false;
});"""
STYLE = """body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { font-size: 0.9em; }
img { max-width: 100%; }
.provenance td { text-align: left; }"""


def sentiment_classes(family: str, values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each value's sentiment class and the class names, as the metric family's finest-but-one accuracy bins
    them: sims, the three Mult_acc_3 bins of clipped values; mosi, Acc-7's clip to [-3, 3] and round."""
    if family == "sims":
        return class_indices(np.clip(values, -1, 1), SIMS_BINS["Mult_acc_3"]), ["negative", "neutral", "positive"]
    return np.round(np.clip(values, -3, 3)).astype(int) + 3, [str(c) for c in range(-3, 4)]


def confusion_matrix(family: str, predicted: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Counts[true class, predicted class] and the class names."""
    true_classes, names = sentiment_classes(family, true)
    predicted_classes, _ = sentiment_classes(family, predicted)
    counts = np.zeros((len(names), len(names)), int)
    np.add.at(counts, (true_classes, predicted_classes), 1)
    return counts, names


def write_html_report(out_dir: Path, report: dict, model_dir: Path, features: Path) -> Path:
    """Draw the figures and write ``report.html`` into ``out_dir``, where ``selfmm.report`` wrote its tables."""
    bundle = json.loads((model_dir / "bundle.json").read_text())
    family = bundle["config"]["metrics"]
    histories = {int(s): _read_columns(model_dir / "history" / f"seed_{s}.csv") for s in report["seeds"]}
    predictions = _read_columns(out_dir / "predictions.csv")
    unimodal = _read_columns(out_dir / "unimodal_labels.csv")
    predicted, true = predictions["predicted"].astype(np.float32), predictions["label"].astype(np.float32)
    counts, names = confusion_matrix(family, predicted, true)
    selected = int(bundle["selected_seed"])
    save_png(out_dir / FIGURES["loss"], lambda: _loss_figure(histories))
    save_png(out_dir / FIGURES["scatter"], lambda: _scatter_figure(predicted, true, selected))
    save_png(out_dir / FIGURES["confusion"], lambda: _confusion_figure(counts, names, selected))
    save_png(out_dir / FIGURES["unimodal"], lambda: _unimodal_figure(unimodal, selected))
    page = _page(report, bundle, features, counts, names)
    atomic_write_text(out_dir / "report.html", page)
    return out_dir / "report.html"


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV table as float columns (an empty cell is NaN; the ``key`` column is skipped)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [n for n in (rows[0] if rows else {}) if n != "key"]
    return {n: np.array([float(r[n]) if r[n] != "" else math.nan for r in rows]) for n in names}


def save_png(path: Path, draw: Callable[[], Figure]) -> None:
    """PNG bytes that depend on the data and matplotlib alone: matplotlib's default style (not the user's
    matplotlibrc), no Software tag, fixed dpi; a Figure of its own, so no pyplot state is shared."""
    with matplotlib.style.context("default"):
        figure = draw()
        FigureCanvasAgg(figure)
        with atomic_open(path, "wb") as f:
            figure.savefig(f, format="png", dpi=DPI, metadata={"Software": None})


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _loss_figure(histories: Mapping[int, Mapping[str, np.ndarray]]) -> Figure:
    figure = _figure(7, 4)
    ax = figure.subplots()
    for i, (seed, history) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        ax.plot(history["epoch"], history["train_loss"], color=colour, label=f"seed {seed} train")
        ax.plot(history["epoch"], history["valid_loss"], color=colour, linestyle="--", label=f"seed {seed} valid")
    ax.set(xlabel="epoch", ylabel="L1 loss", title="Training (solid) and validation (dashed) loss per seed")
    ax.legend(fontsize="small", ncols=2)
    return figure


def _scatter_figure(predicted: np.ndarray, true: np.ndarray, seed: int) -> Figure:
    figure = _figure(5, 5)
    ax = figure.subplots()
    ax.scatter(true, predicted, s=12, alpha=0.7)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=1, label="predicted = true")
    ax.set(xlabel="true sentiment", ylabel="predicted sentiment", title=f"Predicted vs true (seed {seed})")
    ax.legend(fontsize="small")
    return figure


def _confusion_figure(counts: np.ndarray, names: list[str], seed: int) -> Figure:
    figure = _figure(5, 4.5)
    ax = figure.subplots()
    ax.imshow(counts, cmap="Blues")
    for (row, col), n in np.ndenumerate(counts):
        ax.text(col, row, str(n), ha="center", va="center", color="white" if n > counts.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=f"Sentiment classes (seed {seed})")
    return figure


def _unimodal_figure(table: Mapping[str, np.ndarray], seed: int) -> Figure:
    figure = _figure(12, 4)
    for ax, (m, name) in zip(figure.subplots(1, len(UNIMODAL_NAMES)), UNIMODAL_NAMES.items(), strict=True):
        true, generated = table[f"true_{m}"], table[f"generated_{m}"]
        if np.isnan(true).all():
            ax.text(0.5, 0.5, f"no true {name} labels", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.scatter(true, generated, s=10, alpha=0.6)
        ax.set(xlabel=f"true label_{m}", ylabel=f"generated label_{m}", title=name)
    figure.suptitle(f"ULGM's generated vs true unimodal labels, training split (seed {seed})")
    return figure


def _page(report: dict, bundle: dict, features: Path, counts: np.ndarray, names: list[str]) -> str:
    dataset = str(bundle.get("dataset") or "").lower()
    seeds = list(report["seeds"])
    title = f"Self-MM on {dataset or 'a dataset'}: {report['split']} split, {report['clips']} clips"
    sections = [
        f"<h1>{_e(title)}</h1>",
        '<p id="missing" hidden><strong>Some figures could not be loaded: run selfmm evaluate --report '
        "again.</strong></p>",
        "<h2>Model card</h2>",
        _card(ModelCard.from_dict(bundle.get("card"))),
        "<h2>Metrics</h2>",
        "<p>Per seed, mean ± population std over seeds, predicting the training mean for every clip, and the "
        "published Self-MM numbers where there are some. Accuracies and F1 in percent.</p>",
        _metrics_table(report, seeds, dataset),
        "<h2>Loss per epoch</h2>",
        _img("loss", "training and validation loss per epoch, one colour per seed"),
        "<h2>Predicted vs true</h2>",
        _img("scatter", "predicted against true sentiment of the selected seed"),
        "<h2>Confusion matrix</h2>",
        _table(["true \\ predicted", *names], [[n, *row] for n, row in zip(names, counts.tolist(), strict=True)]),
        _img("confusion", "confusion matrix of the sentiment classes"),
        "<h2>ULGM's generated unimodal labels</h2>",
        "<p>Pearson r of the generated label with the true unimodal label (and of the multimodal label with "
        "it), r of their offsets from the multimodal label, and the share of clips with the true label's sign: "
        f"means ± std over seeds. Label rule: <code>{_e(str(report['ulgm']))}</code>.</p>",
        _recovery_table(report["unimodal_recovery"]),
        _img("unimodal", "generated against true unimodal labels per modality"),
        "<h2>Provenance</h2>",
        _provenance(report, bundle, features),
    ]
    body = "\n".join(sections)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        f"<title>{_e(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}\n"
        f"<script>\n{IMAGE_CHECK}\n</script>\n</body>\n</html>\n"
    )


def _card(card: ModelCard) -> str:
    """What the model was trained on, with the caution a synthetic corpus calls for."""
    rows = [line.split(": ", 1) for line in card.lines() if not line.startswith("caution: ")]
    caution = f"<p><strong>{_e(card.caution)}</strong></p>" if card.caution else ""
    return _table(["", ""], rows) + caution


def _metrics_table(report: dict, seeds: list[str], dataset: str) -> str:
    published = PUBLISHED.get(dataset, ())
    header = ["metric", *(f"seed {s}" for s in seeds), "mean ± std", "train mean", *(p.source.value for p in published)]
    rows = []
    for name, mean in report["mean"].items():
        rows.append(
            [
                name,
                *(format_value(name, report["seeds"][s][name]) for s in seeds),
                f"{format_value(name, mean)} ± {format_value(name, report['std'][name])}",
                format_value(name, report["baseline_train_mean"].get(name)),
                *(format_value(name, p.metrics.get(name)) for p in published),
            ]
        )
    notes = "".join(
        f"<p>{_e(p.source.value)}: {_e(p.citation)}{_e(f' ({p.note})' if p.note else '')}</p>" for p in published
    )
    return _table(header, rows) + notes


def _recovery_table(recovery: Mapping[str, Mapping[str, float]]) -> str:
    if not recovery:
        return "<p>The dataset has no true unimodal labels: nothing to compare the generated ones with.</p>"
    columns = ["generated", "multimodal", "offset", "sign_agreement", "sign_agreement_multimodal"]
    rows = [
        [UNIMODAL_NAMES[m], *(f"{_number(r[c])} ± {_number(r[f'{c}_std'])}" for c in columns)]
        for m, r in recovery.items()
    ]
    return _table(
        ["modality", "r generated", "r multimodal", "r offset", "sign agrees", "sign agrees (multimodal)"], rows
    )


def _provenance(report: dict, bundle: dict, features: Path) -> str:
    config = bundle["config"]
    general = [
        ["features", f"{features} (SHA-256 {file_sha256(features)})"],
        ["feature config hash", bundle["feature_config_hash"]],
        ["training config hash", json_sha256(config)],
        ["seeds", ", ".join(str(s) for s in bundle["seeds"]) + f" (selected: {bundle['selected_seed']})"],
        ["numerics", f"{report['numerics']['mode']}, threads {report['numerics']['threads'] or 'as the machine'}"],
        ["text model", str(bundle["text_model"])],
        ["metric family", str(config["metrics"])],
    ]
    extractors = [
        [
            modality,
            f"{p['extractor']} {p['version']}",
            p["config_hash"],
            ", ".join(f"{k} {v}" for k, v in sorted(p.get("identity", {}).items())) or "–",
        ]
        for modality, p in sorted(bundle["provenance"].items())
    ]
    return (
        '<div class="provenance">'
        + _table(["what", "value"], general)
        + _table(["modality", "extractor", "config hash", "code, libraries, models"], extractors)
        + "<details><summary>Training config</summary><pre>"
        + _e(json.dumps(config, indent=2, sort_keys=True))
        + "</pre></details></div>"
    )


def _number(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _img(figure: str, alt: str) -> str:
    return f'<p><img src="{FIGURES[figure]}" alt="{_e(alt)}"></p>'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _e(text: str) -> str:
    return html.escape(text, quote=True)

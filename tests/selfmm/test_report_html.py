"""report.html and its figures: what the page shows, byte-identical PNGs (they are DVC outputs), the confusion
matrix's classes as the metrics bin them, and the page in a real headless Chromium: every image loads and the
page makes no network request."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from selfmm.config import TrainConfig
from selfmm.metrics import mosi_metrics
from selfmm.report import write_report
from selfmm.report_html import FIGURES, confusion_matrix, sentiment_classes, write_html_report
from selfmm.trainer import train
from tests.support.browser import CHROMIUM, NO_CHROMIUM, render, screenshot
from tests.support.synthetic import make_synthetic_store, make_text_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"  # kept after the run (git ignores)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A two-seed bundle trained on a tiny store with true unimodal labels, and its report."""
    root = tmp_path_factory.mktemp("report")
    text_model = str(make_text_model(root / "bert"))
    store = make_synthetic_store(
        root / "store.h5", text_model, sizes={"train": 40, "valid": 12, "test": 24}, unimodal=True
    )
    config = TrainConfig(
        text_model=text_model,
        seeds=[11, 12],
        batch_size=8,
        update_epochs=1,
        early_stop=2,
        max_epochs=3,
        H=1.0,
        metrics="sims",
    )
    model = train(store, root / "model", config).out_dir
    report = write_report(model, store, root / "out")
    return model, store, root / "out", report


def _png_text_chunks(data: bytes) -> list[bytes]:
    """The keywords of a PNG's tEXt/iTXt chunks (where matplotlib would write its version and a date)."""
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind in (b"tEXt", b"iTXt"):
            chunks.append(data[at + 8 : at + 8 + length].split(b"\0")[0])
        at += 12 + length
    return chunks


def test_the_page_shows_every_seed_the_baseline_the_figures_and_the_provenance(reported):
    model, store, out, report = reported
    page = (out / "report.html").read_text()
    assert all(f"<th>seed {s}</th>" in page for s in ("11", "12"))
    assert "<th>train mean</th>" in page and "mmsa" not in page  # no published numbers for this dataset
    mae = f"{report['mean']['MAE']:.4f} ± {report['std']['MAE']:.4f}"
    assert mae in page
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(FIGURES.values())
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in FIGURES.values())
    bundle = json.loads((model / "bundle.json").read_text())
    assert bundle["feature_config_hash"] in page and "synthetic 0" in page  # the extractors and versions
    for m, name in (("T", "text"), ("A", "audio"), ("V", "vision")):
        assert f"<td>{name}</td><td>{report['unimodal_recovery'][m]['generated']:.3f} ± " in page


def test_a_dataset_with_published_numbers_gets_them_beside_ours(reported, tmp_path):
    model, store, out, report = reported
    sims = tmp_path / "model"
    shutil.copytree(model, sims)
    bundle = json.loads((sims / "bundle.json").read_text())
    (sims / "bundle.json").write_text(json.dumps({**bundle, "dataset": "SIMS"}))
    shutil.copytree(out, tmp_path / "out")
    page = write_html_report(tmp_path / "out", report, sims, store).read_text()
    assert "<th>mmsa</th><th>paper</th>" in page
    assert "<td>0.4250</td><td>0.4190</td>" in page  # MMSA's and the paper's SIMS MAE


def test_figures_and_page_are_the_same_bytes_when_rendered_again_and_carry_no_version_or_date(reported, tmp_path):
    model, store, out, report = reported
    again = tmp_path / "again"
    shutil.copytree(out, again)
    for name in FIGURES.values():
        (again / name).unlink()
    write_html_report(again, report, model, store)
    for name in [*FIGURES.values(), "report.html"]:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for name in FIGURES.values():
        assert _png_text_chunks((out / name).read_bytes()) == [], name


def test_the_confusion_matrix_holds_the_test_clips_and_its_diagonal_is_the_three_class_accuracy(reported):
    model, _, out, report = reported
    rows = np.loadtxt(out / "predictions.csv", delimiter=",", skiprows=1, usecols=(1, 2), dtype=np.float32)
    counts, names = confusion_matrix("sims", rows[:, 1], rows[:, 0])
    assert names == ["negative", "neutral", "positive"]
    assert counts.sum() == report["clips"]
    seed = json.loads((model / "bundle.json").read_text())["selected_seed"]  # predictions.csv is its
    assert np.trace(counts) / counts.sum() == report["seeds"][str(seed)]["Mult_acc_3"]


def test_mosi_classes_are_acc7s_rounded_clipped_values():
    values = np.array([-3.4, -0.5, 0.5, 1.5, 2.6], np.float32)
    classes, names = sentiment_classes("mosi", values)
    assert names == ["-3", "-2", "-1", "0", "1", "2", "3"]
    assert classes.tolist() == [0, 3, 3, 5, 6]  # round half to even, as Acc-7
    predicted = np.array([-2.6, 0.4, -0.4, 2.4, 0.0], np.float32)
    counts, _ = confusion_matrix("mosi", predicted, values)
    assert np.trace(counts) / len(values) == mosi_metrics(predicted, values)["Mult_acc_7"]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_in_chromium_every_image_loads_and_the_page_makes_no_network_request(reported, tmp_path):
    _, _, out, _ = reported
    dom, requests = render((out / "report.html").as_uri(), tmp_path)
    assert f'data-images-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom
    assert requests == []
    shot = screenshot((out / "report.html").as_uri(), ARTEFACTS / "report.png", tmp_path)
    assert shot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_in_chromium_a_missing_figure_and_a_remote_image_are_caught(reported, tmp_path):
    """The two checks above can fail: a page without its policy that loads a remote image, one PNG gone."""
    _, _, out, _ = reported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / FIGURES["loss"]).unlink()
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", (broken / "report.html").read_text())
    (broken / "report.html").write_text(page.replace("</h1>", '</h1><img src="http://192.0.2.1/x.png">', 1))
    dom, requests = render((broken / "report.html").as_uri(), tmp_path)
    assert f'data-images-loaded="{len(FIGURES) - 1}/{len(FIGURES) + 1}"' in dom
    assert requests == ["http://192.0.2.1/x.png"]

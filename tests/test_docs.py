"""The README's Python usage block and quick commands, run as a user would run them after ``dvc repro``: in a
folder whose ``data/demo`` holds a (small) demo corpus, with the venv's ``python`` and ``selfmm``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from features.datasets.demo.corpus import make_demo_corpus
from tests.support.data import REPO
from tests.support.projects import BIN, env


def readme_block(language: str, after: str) -> str:
    """The first ``language`` code block of the README after the heading ``after``."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(f"\n{after}\n") :]
    match = re.search(rf"```{language}\n(.*?)\n```", section, re.DOTALL)
    assert match, f"README.md: no ```{language} block after {after!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A folder as ``dvc repro`` leaves it, with a 12-clip demo corpus (four videos: train, valid and test)."""
    root = tmp_path_factory.mktemp("user")
    make_demo_corpus(root / "data" / "demo", clips=12, seed=0, clips_per_video=3, workers=1)
    return root


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env={**env(cwd), "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def usage_block_output(user_folder) -> str:
    """What the README's Python usage block prints, run once in the user's folder (it trains build/api/model)."""
    return run([sys.executable, "-c", readme_block("python", "## Python usage")], user_folder)


@pytest.mark.timeout(300)
def test_python_usage_block_extracts_trains_evaluates_and_predicts(user_folder, usage_block_output):
    out = usage_block_output
    assert re.search(r"^12 clips extracted, 0 failed$", out, re.MULTILINE), out
    assert "'MAE'" in out and "'Corr'" in out, out
    prediction = re.search(r"\{'M': (\S+), 'T': (\S+), 'A': (\S+), 'V': (\S+)\}", out)
    assert prediction, out
    assert all(-1.5 < float(score.rstrip(",}")) < 1.5 for score in prediction.groups())  # the demo's label range
    assert (user_folder / "build" / "api" / "model" / "bundle.json").is_file()


@pytest.mark.timeout(300)
def test_quick_commands(user_folder, usage_block_output):
    assert "predict" in run([str(BIN / "selfmm"), "--help"], user_folder)
    info = run([str(BIN / "selfmm"), "info", "build/api/model"], user_folder)
    assert "trained on: demo (synthetic" in info, info


def test_the_docs_site_builds_strict_and_loads_nothing_from_the_network(tmp_path):
    """A broken link or a page missing from the nav fails the build; the pages fetch no script, style or font."""
    run([str(BIN / "mkdocs"), "build", "--strict", "--quiet", "-d", str(tmp_path)], REPO)
    pages = sorted(tmp_path.glob("*.html"))
    assert {p.stem for p in pages} >= {"index", "install", "pipeline", "datasets", "prediction", "ulgm", "benchmarks"}
    fetched = re.compile(r"<(?:script|img)[^>]+src=\"https?:|<link[^>]+href=\"https?:|url\(['\"]?https?:")
    for path in [*pages, *tmp_path.rglob("*.css"), *tmp_path.rglob("*.js")]:
        assert not fetched.search(path.read_text(errors="replace")), f"{path.name} loads from the network"

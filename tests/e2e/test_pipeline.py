"""`dvc repro` end to end on a small demo corpus: raw media -> features -> Self-MM -> metrics, with the real tools."""

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from features.store import FeatureStore
from tests.support.projects import make_project, run
from tests.support.serve_command import processes_in


def changed_stages(root: Path, code: str, old: str, new: str) -> set[str]:
    """The stages ``dvc status`` marks changed after one edit of a code file (undone before returning)."""
    path = root / code
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new, 1))
    try:
        status = json.loads(run(["dvc", "status", "--json"], root, stdout_only=True))
    finally:
        path.write_text(original)
    return set(status)


def metrics(root: Path) -> dict:
    return json.loads((root / "build/demo/report/metrics.json").read_text())


@pytest.mark.slow
def test_dvc_repro_from_scratch_twice_gives_identical_metrics_and_survives_bad_input(tmp_path):
    first = make_project(tmp_path / "first")
    out = run(["dvc", "repro"], first)
    for stage in ("demo_corpus", "extract@demo", "train@demo", "evaluate@demo"):
        assert f"Running stage '{stage}'" in out
    assert out.count("selfmm: started a local Prefect server") == 1  # one, shared by the stages, and said
    deadline = time.monotonic() + 15
    while processes_in(first) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in(first) == [], "dvc repro left processes behind"  # the server stopped with dvc
    result = metrics(first)
    assert result["clips"] >= 3 and set(result["seeds"]) == {"1111"}
    assert set(result["unimodal_recovery"]) == {"T", "A", "V"}
    assert result["numerics"] == {"mode": "portable", "threads": 2}  # the demo preset's, recorded with the result
    assert (first / "dvc.lock").is_file()
    for table in ("loss.csv", "predictions.csv", "unimodal_labels.csv"):
        assert (first / "build/demo/report" / table).stat().st_size > 0

    # The trained bundle scores a raw clip through the same extractors: fused and per-modality sentiment.
    clip = sorted((first / "data/demo/Raw").glob("*/*.mp4"))[-1]
    predicted = json.loads(
        run(
            [
                "selfmm",
                "predict",
                str(clip),
                "--model",
                "build/demo/model",
                "--text",
                "I loved every minute of it.",
                "--json",
            ],
            first,
            stdout_only=True,
        )
    )
    scores = [predicted[k] for k in ("sentiment", "text_sentiment", "audio_sentiment", "vision_sentiment")]
    assert all(isinstance(x, float) and abs(x) < 10 for x in scores)

    second = make_project(tmp_path / "second")
    run(["dvc", "repro"], second)
    assert metrics(second) == result
    # The same bytes throughout: no timing, date or host in anything DVC hashes.
    assert (second / "dvc.lock").read_text() == (first / "dvc.lock").read_text()
    assert (first / "build/demo/model.timings.csv").is_file()  # the timings live beside the bundle

    # Nothing changed: nothing runs, and dvc status says so.
    again = run(["dvc", "repro"], first)
    assert "Running stage" not in again
    assert "up to date" in run(["dvc", "status"], first).lower()

    # The corpus deleted: rebuilt (DVC restores it from its cache), and nothing downstream re-runs.
    label_file = (first / "data/demo/label.csv").read_bytes()
    shutil.rmtree(first / "data/demo")
    rebuilt = run(["dvc", "repro"], first)
    assert "Running stage 'extract@demo'" not in rebuilt
    assert (first / "data/demo/label.csv").read_bytes() == label_file
    # Regenerated for real: the generator gives the same bytes, so the pipeline is still up to date.
    assert "Running stage 'demo_corpus'" in run(["dvc", "repro", "--force", "--single-item", "demo_corpus"], first)
    assert "up to date" in run(["dvc", "status"], first).lower()
    assert metrics(first) == result

    # Code changes mark exactly the stages whose outputs depend on that code.
    edit = ('"early_stop": 4', '"early_stop": 5')  # the demo preset's patience
    assert changed_stages(second, "selfmm/config.py", *edit) == {"train@demo", "evaluate@demo"}
    assert changed_stages(second, "features/extractors/face_mesh.py", "ROI_SCALE = 1.5", "ROI_SCALE = 1.6") == {
        "extract@demo"
    }
    assert changed_stages(second, "selfmm/report.py", '"""', '"""Edited. ') == {"evaluate@demo"}

    # A broken clip: reported by the extract stage, and the pipeline still finishes.
    victim = sorted((first / "data/demo/Raw").glob("*/*.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    run(["dvc", "repro", "--downstream", "extract@demo"], first)
    failures = (first / "build/demo/features.failures.csv").read_text()
    assert victim.stem in failures and "decode" in failures
    assert metrics(first)["clips"] >= 1


def test_the_dvc_stages_write_where_the_flows_read():
    """dvc.yaml's stages per dataset and flows/releases.py's DatasetPaths name the same folders."""
    from dvc.repo import Repo

    from flows.releases import DatasetPaths
    from flows.retrain import dvc_stages
    from tests.support.data import REPO

    with Repo(str(REPO)) as repo:
        outs = {stage.addressing: {str(out.def_path) for out in stage.outs} for stage in repo.index.stages}
    paths = DatasetPaths("demo")
    extract, train, evaluate = dvc_stages("demo")
    assert str(paths.features) in outs[extract] and outs[train] == {str(paths.model)}
    assert any(out.startswith(str(paths.metrics.parent)) for out in outs[evaluate])


@pytest.mark.slow
def test_a_fresh_clone_builds_the_demo_only_and_a_dataset_added_to_build_gets_its_stages(tmp_path, mosi_dataset):
    """No real data on a fresh clone: dvc.yaml's stages are the demo's. A dataset added to params ``build`` once
    its data is in data/<d>/ gets extract@<d>, train@<d>, evaluate@<d>, which run on that data."""
    root = make_project(tmp_path / "project")

    def stages() -> set[str]:
        return set(run(["dvc", "stage", "list", "--name-only"], root, stdout_only=True).split())

    assert stages() == {"demo_corpus", "extract@demo", "train@demo", "evaluate@demo"}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["build"]["mosi"] = "train_mosi"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data").mkdir(exist_ok=True)
    mosi_dataset.rename(root / "data" / "mosi")
    assert stages() == {
        "demo_corpus",
        *(f"{s}@{d}" for s in ("extract", "train", "evaluate") for d in ("demo", "mosi")),
    }
    run(["dvc", "repro", "--single-item", "extract@mosi"], root)
    with FeatureStore(root / "build/mosi/features.h5") as store:
        assert store.dataset == "mosi" and len(store) == 3


def test_every_stage_in_dvc_lock_is_a_stage_of_dvc_yaml():
    """A stage renamed or removed in dvc.yaml leaves its entry in dvc.lock until someone drops it."""
    import yaml
    from dvc.repo import Repo

    from tests.support.data import REPO

    with Repo(str(REPO)) as repo:
        stages = {stage.addressing for stage in repo.index.stages}
    locked = set(yaml.safe_load((REPO / "dvc.lock").read_text())["stages"])
    assert locked <= stages, f"dvc.lock holds stages dvc.yaml does not define: {sorted(locked - stages)}"

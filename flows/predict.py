"""The ``predict`` flow (deployment ``predict/<dataset>``): the champion's predictions for the media dropped into
``data/<dataset>/incoming/``, written to ``models/<dataset>/predictions.csv`` and published as a table artifact.
Thin glue over selfmm/batch.py, which does the work through the shard cache (re-predicting is cheap)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from features.cache import ShardCache
from features.types import DatasetError
from flows.artifacts import artifact_key
from flows.params import load_params
from flows.releases import DatasetPaths
from selfmm.batch import extraction_config, predict_path, text_summary, write_predictions
from selfmm.bundle import load_bundle
from selfmm.predict import Predictor
from selfmm.timeline import timeline_of, write_timeline


def incoming_folder(dataset: str) -> Path:
    return Path("data") / dataset / "incoming"


@flow(name="predict", flow_run_name="predict-{dataset}")
def predict_flow(
    dataset: str,
    incoming: str | None = None,
    model: str | None = None,
    out: str | None = None,
    subtitles: str | None = None,
) -> dict:
    """Predict every clip of ``incoming`` (default data/<dataset>/incoming/: a folder of media or a dataset
    folder) with ``model`` (default the dataset's champion); one row per clip, failures included. With
    ``subtitles`` (SRT or WebVTT), ``incoming`` is one media file, scored cue by cue into a timeline."""
    logger = get_run_logger()
    paths = DatasetPaths(dataset)
    if subtitles is not None:
        return _timeline(dataset, Path(incoming or ""), Path(subtitles), model, out)
    folder = Path(incoming) if incoming else incoming_folder(dataset)
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: no such folder; put the media to predict there (media files, searched recursively, each "
            "<clip>.txt or <clip>.<ext>.txt its transcript; or a dataset folder with label.csv)"
        )
    bundle = load_bundle(Path(model or paths.champion).resolve())  # one release for the whole run
    rows, result = predict_path(bundle, folder, ShardCache(load_params().run.cache_dir))
    target = write_predictions(Path(out) if out else paths.home / "predictions.csv", rows)
    result["predictions"] = str(target)
    create_table_artifact(
        [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(r).items()} for r in rows],
        key=artifact_key("predict", dataset),
        description=f"{folder} predicted by {bundle.path}: {result['predicted']} clips, {result['failed']} failed, "
        f"{result['without_text']} without a transcript. {result['caution']}",
    )
    logger.info("%s: %d clips predicted, %d failed -> %s", folder, result["predicted"], result["failed"], target)
    logger.info(text_summary(rows))
    if result["caution"]:
        logger.warning(result["caution"])
    return result


def _timeline(dataset: str, media: Path, subtitles: Path, model: str | None, out: str | None) -> dict:
    """timeline.csv/png/html of one media file (default under models/<dataset>/timelines/<file>/) and a table
    artifact of its segments."""
    paths = DatasetPaths(dataset)
    if not media.is_file():
        raise DatasetError(f"{media}: no such media file (with subtitles, incoming names the file to score)")
    params = load_params()
    bundle = load_bundle(Path(model or paths.champion).resolve())
    cache = ShardCache(params.run.cache_dir)
    segments, caution = timeline_of(
        Predictor(bundle), media, subtitles, params.predict.min_segment_s, extraction_config(bundle), cache
    )
    files = write_timeline(Path(out) if out else paths.home / "timelines" / media.name, segments, media.name)
    failed = sum(1 for s in segments if s.error)
    create_table_artifact(
        [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(s).items()} for s in segments],
        key=artifact_key("timeline", dataset),
        description=f"{media} with {subtitles}, by {bundle.path}: {len(segments)} segments, {failed} failed",
    )
    logger = get_run_logger()
    logger.info("%s: %d segments, %d failed -> %s", media, len(segments), failed, files["timeline.html"])
    if caution:
        logger.warning(caution)
    return {
        "segments": len(segments),
        "failed": failed,
        **{name: str(path) for name, path in files.items()},
        "caution": caution,
    }

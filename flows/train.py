"""The ``train`` and ``evaluate`` flows: Self-MM on a feature store, driven by params.yaml's ``train`` section."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.artifacts import artifact_key, publish_metrics, store_dataset
from flows.params import load_params


@flow(name="train")
def train_flow(
    features: str, out: str, overrides: dict | None = None, params_file: str | None = None, section: str = "train"
) -> dict:
    """Train one model per seed on ``features`` and write the bundle to ``out``."""
    from selfmm.trainer import train

    logger = get_run_logger()
    config = load_params(params_file).train_config(section, overrides)
    logger.info("training on %s with seeds %s (text model %s)", features, config.seeds, config.text_model)
    result = train(features, out, config)
    for seed in result.seeds:
        logger.info(
            "seed %d: best epoch %d of %d, valid L1 %.4f", seed.seed, seed.best_epoch, seed.epochs, seed.valid_loss
        )
    publish_metrics(
        artifact_key(store_dataset(features), "train", "metrics"),
        {str(seed.seed): seed.test for seed in result.seeds},
        result.mean,
        result.std,
        f"test metrics of {out} per seed (selected: {result.selected_seed})",
    )
    return {"model": str(Path(out)), "selected_seed": result.selected_seed, "mean": result.mean, "std": result.std}


@flow(name="evaluate")
def evaluate_flow(model: str, features: str, report_dir: str, split: str = "test", device: str = "auto") -> dict:
    """Evaluate every seed of a bundle and write the report (metrics.json, plot tables, report.html) to
    ``report_dir``."""
    from selfmm.report import write_report

    report = write_report(model, features, report_dir, split, device)
    get_run_logger().info("%s metrics (mean over seeds): %s", split, report["mean"])
    publish_metrics(
        artifact_key(store_dataset(features), "metrics"),
        report["seeds"],
        report["mean"],
        report["std"],
        f"{split} metrics of {model} per seed, {report['clips']} clips (report: {report_dir}/report.html)",
    )
    return report

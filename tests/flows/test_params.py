"""params.yaml is checked in full when read: a typo in any section (a key or a value) fails at once, naming
``section.key`` and what is allowed; the CLI reports project errors as one line and lets bugs propagate."""

import time

import pytest
import yaml

import flows.cli
from features.config import ExtractConfig, Modality
from features.errors import ConfigError, PipelineError
from flows.cli import main
from flows.params import RunConfig, TaskRunnerKind, load_params
from tests.support.data import REPO

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(tmp_path, section, key, value):
    """The repository's params.yaml with ``section.key`` (dotted below the section) set to ``value``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    node = params.setdefault(section, {})
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def refused(path) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert time.monotonic() - started < 1.0
    return str(err.value)


def test_the_repository_params_are_valid_and_keep_the_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.run == RunConfig() and params.run.task_runner is TaskRunnerKind.THREADS
    assert params.build == {"demo": "train"}  # what `dvc repro` builds on a fresh clone: no real data needed
    assert list(params.serve.datasets) == ["demo", "mosi", "mosei", "sims"]  # deployments for all, data there or not
    assert params.serve.port == 4200 and params.serve.idle_stop_s == 180
    assert params.train_config("train_sims").text_model == "bert-base-chinese"
    config = params.extract_config()
    assert config == ExtractConfig() and config.to_dict()["audio"]["feature_set"] == "eGeMAPSv02"
    # the shard cache keys and dvc.lock depend on these: the enums serialise as the strings did
    assert {m: config.hash(m) for m in Modality} == {
        Modality.AUDIO: "8f9062bad3b56501",
        Modality.VISION: "c7a1290059c36345",
        Modality.TEXT: "8d1f38f4bc1ef383",
    }


def test_extract_typos_name_the_key_and_the_allowed_values(tmp_path):
    message = refused(write_params(tmp_path, "extract", "audio.feature_set", "eGeMAPSv2"))
    assert "extract.audio.feature_set: 'eGeMAPSv2' is not one of" in message and "eGeMAPSv02" in message
    message = refused(write_params(tmp_path, "extract", "face.fsp", 5))
    assert "extract.face: unknown key(s) fsp" in message and "fps" in message


def test_run_typos_name_the_key_and_the_allowed_values(tmp_path):
    message = refused(write_params(tmp_path, "run", "task_runner", "dusk"))
    assert "run.task_runner: 'dusk' is not one of threads, processes, dask" in message
    assert "run.workers: 'two' is not a whole number" in refused(write_params(tmp_path, "run", "workers", "two"))


def test_a_detection_threshold_that_is_no_probability_is_refused(tmp_path):
    for value in (0.0, 1.0, 1.5):
        message = refused(write_params(tmp_path, "extract", "face.min_detection_confidence", value))
        assert f"extract.face: min_detection_confidence: {value!r} is not between 0 and 1" in message


def test_demo_typos_name_the_key_and_the_allowed_keys(tmp_path):
    message = refused(write_params(tmp_path, "demo", "clip", 30))
    assert "demo: unknown key(s) clip; allowed: clips, seed" in message


def test_train_typos_name_the_section_key_and_the_allowed_values(tmp_path):
    message = refused(write_params(tmp_path, "train_mosi", "learning_rate", 0.1))
    assert "train_mosi: unknown training parameter(s) learning_rate" in message and "learning_rate_bert" in message
    message = refused(write_params(tmp_path, "train", "preset", "demoo"))
    assert "train.preset: unknown preset 'demoo'; choose from mosi, mosei, sims, demo" in message
    assert "train.batch_size: 'big' is not a whole number" in refused(
        write_params(tmp_path, "train", "batch_size", "big")
    )


def test_serve_typos_name_the_key_and_the_allowed_keys(tmp_path):
    message = refused(write_params(tmp_path, "serve", "datasets.demo.retrain_corn", "0 3 * * *"))
    assert "serve.datasets.demo: unknown key(s) retrain_corn; allowed: train_section, retrain_cron" in message
    assert "serve.port: 'http' is not a whole number" in refused(write_params(tmp_path, "serve", "port", "http"))


def test_built_and_served_datasets_name_training_sections_that_exist_and_agree(tmp_path):
    message = refused(write_params(tmp_path, "build", "mosi", "train_mosy"))
    assert "build.mosi: no training section 'train_mosy' in params (train, train_mosei, train_mosi" in message
    message = refused(write_params(tmp_path, "build", "mosi", "train"))
    assert "build.mosi trains with 'train' but serve.datasets.mosi.train_section is 'train_mosi'" in message
    assert "build.demo: 3 is not a string" in refused(write_params(tmp_path, "build", "demo", 3))
    assert "build.my data: unsafe dataset name" in refused(write_params(tmp_path, "build", "my data", "train"))
    message = refused(write_params(tmp_path, "serve", "idle_stop_s", -1))
    assert "serve: idle_stop_s must be 0 or more seconds (or null: never), not -1" in message


def test_unknown_sections_and_missing_files_are_config_errors(tmp_path):
    message = refused(write_params(tmp_path, "extrakt", "audio", {}))
    assert (
        "unknown section(s) extrakt; allowed: extract, run, demo, train, build, predict, serve, train_<name>" in message
    )
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_extract_with_a_bad_feature_set_fails_before_any_decode(mosi_dataset, tmp_path, capsys):
    params = write_params(tmp_path, "extract", "audio.feature_set", "eGeMAPSv2")
    out = tmp_path / "out.h5"
    started = time.monotonic()
    code = main(
        [
            "extract",
            "--dataset",
            str(mosi_dataset),
            "--out",
            str(out),
            "--params",
            str(params),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert time.monotonic() - started < 2.0  # one decode of these clips alone takes longer
    assert code == 1 and not out.exists() and not (tmp_path / "cache").exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfmm: error: ")
    assert "extract.audio.feature_set: 'eGeMAPSv2' is not one of" in lines[0]


def test_a_bad_override_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    args = ["extract", "--dataset", str(tmp_path), "--out", str(tmp_path / "o.h5"), "--set", "face.fps"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == "selfmm: error: override 'face.fps' is not of the form section.key=value\n"
    assert main(["--debug", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1] == "selfmm: error: override 'face.fps' is not of the form section.key=value"


def test_an_error_outside_the_project_family_propagates(monkeypatch, tmp_path):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(flows.cli, "_info", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["info", str(tmp_path / "x.h5")])

    def refuses(args):
        raise PipelineError("a project error")

    monkeypatch.setattr(flows.cli, "_info", refuses)
    assert main(["info", str(tmp_path / "x.h5")]) == 1


def test_the_predict_section_and_the_video_limit_are_checked(tmp_path):
    assert "predict: min_segment_s must be 0 or more" in refused(write_params(tmp_path, "predict", "min_segment_s", -1))
    message = refused(write_params(tmp_path, "serve", "model.max_video_s", 0))
    assert "serve.model" in message and "max_video_s must be positive" in message


def test_numbers_read_as_dvc_reads_them_and_nested_keys_and_list_items_named(tmp_path):
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text.replace("  threads: 2 ", "  learning_rate_bert: 5e-5\n  threads: 2 ", 1))
    assert load_params(path).train_config().learning_rate_bert == 5e-5  # YAML 1.2 (DVC): a float, not a string
    assert "train.seeds[1]: 'a' is not a whole number" in refused(write_params(tmp_path, "train", "seeds", [1, "a"]))
    for bad in (True, "3", 2.5):
        assert "serve.keep_releases:" in refused(write_params(tmp_path, "serve", "keep_releases", bad))
    message = refused(write_params(tmp_path, "serve", "model.max_uplaod_mb", 5))
    assert "serve.model: unknown key(s) max_uplaod_mb; allowed: max_upload_mb, max_concurrent" in message
    assert "extract.face: expected a mapping of keys, got 3" in refused(write_params(tmp_path, "extract", "face", 3))

"""`selfmm serve` end to end: it starts a real Prefect server on a free loopback port, serves the deployments of
params.yaml, runs `prefect deployment run` requests, and leaves no process behind on Ctrl-C; DVC then re-uses the
deployment's extraction work. Plus the bad inputs: unknown deployment, missing data, malformed cron, no server."""

import socket
import subprocess
import time
from typing import cast

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from features.store import FeatureStore
from flows.cli import main
from flows.deployment_runner import stage_making
from tests.support.data import REPO, free_port
from tests.support.projects import env, project, sh
from tests.support.serve_command import finished, flow_run_id, processes_in, serving


@pytest.mark.slow
def test_serve_runs_deployments_and_stops_cleanly_and_dvc_reuses_the_extraction(tmp_path, mosi_dataset):
    root = project(tmp_path / "project", demo={"clips": 6, "seed": 3})  # params.yaml's served datasets, as cloned
    sh(["dvc", "repro", "demo_corpus"], root)
    port = free_port()
    with serving(root, port) as api:
        said = next(line for line in (root / "serve.log").read_text().splitlines() if line.startswith("No data yet"))
        assert all(f"data/{d}/" in said for d in ("mosi", "mosei", "sims")) and "data/demo/" not in said
        started = time.monotonic()
        missing = sh(["prefect", "deployment", "run", "feature-extract/mosei", "--watch"], root, api, check=False)
        assert time.monotonic() - started < 30 and missing.returncode == 1  # no data/mosei/: Failed, and why
        assert "Flow run finished in state 'Failed'" in missing.stdout
        assert "data/mosei/: no such folder" in missing.stdout and "--param data=DIR" in missing.stdout
        run = sh(
            ["prefect", "deployment", "run", "feature-extract/demo", "--watch", "--watch-timeout", "300"], root, api
        )
        assert "Completed" in run.stdout
        with FeatureStore(root / "build/demo/features.h5") as store:
            assert len(store) == 6
        elsewhere = sh(
            ["prefect", "deployment", "run", "feature-extract/mosei", "--param", f"data={mosi_dataset}", "--watch"],
            root,
            api,
        )
        assert "Completed" in elsewhere.stdout
        with FeatureStore(root / "build/mosei/features.h5") as store:
            assert len(store) == 3 and store.dataset == "mosei"

        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            failed = finished(client, flow_run_id(missing.stdout))
            retrain = client.read_deployment_by_name("retrain/demo")
            served = sorted(d.name for d in client.read_deployments())
        assert served == sorted(["demo", "mosi", "mosei", "sims"] * 4)  # feature-extract, train, retrain, predict
        assert failed.state is not None and failed.end_time is not None and failed.start_time is not None
        assert failed.state.is_failed() and (failed.end_time - failed.start_time).total_seconds() < 30
        message = failed.state.message
        assert message is not None
        assert "data/mosei/: no such folder" in message and "label.csv" in message and "Real datasets" in message
        assert [cast(CronSchedule, s.schedule).cron for s in retrain.schedules] == ["0 3 * * *"]  # from params.yaml
        assert retrain.global_concurrency_limit is not None
        assert retrain.global_concurrency_limit.limit == 1  # two retrains never overlap

        unknown = sh(["prefect", "deployment", "run", "feature-extract/nope"], root, api, check=False)
        assert unknown.returncode != 0 and "not found" in unknown.stdout + unknown.stderr

        # DVC did not make the store, and says so; its extract stage then finds every video in the shard cache.
        assert "extract@demo" in sh(["dvc", "status", "extract@demo"], root).stdout
        repro = sh(["dvc", "repro", "extract@demo"], root, api).stdout
        assert '"extracted": 0' in repro and '"cached": 6' in repro  # the summary `selfmm extract` prints
        assert "up to date" in sh(["dvc", "status", "extract@demo"], root).stdout

    assert processes_in(root) == [], "processes left behind after Ctrl-C"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the server is gone too


def test_serve_refuses_a_malformed_cron_before_starting_anything(tmp_path, monkeypatch, capsys):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["serve"]["datasets"]["demo"]["retrain_cron"] = "61 * * * *"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    assert main(["serve", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "serve.datasets.demo.retrain_cron" in err and "'61 * * * *'" in err
    assert not (tmp_path / ".prefect" / "server.log").exists()


@pytest.mark.slow
def test_commands_fail_fast_when_the_server_is_not_running(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    dead = f"http://127.0.0.1:{free_port()}/api"
    expected = {
        ("selfmm", "serve"): "no Prefect server answers at PREFECT_API_URL",
        ("prefect", "deployment", "run", "feature-extract/demo"): "All connection attempts failed",
    }
    started = time.monotonic()
    running = {
        cmd: subprocess.Popen(
            cmd, cwd=tmp_path, env=env(tmp_path, dead), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for cmd in expected
    }
    for cmd, proc in running.items():
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode != 0 and expected[cmd] in output, output
    assert time.monotonic() - started < 60


def test_the_banner_names_the_dvc_stage_that_makes_a_missing_dataset_only_where_one_does(tmp_path):
    assert stage_making("data/demo", REPO / "dvc.yaml") == "demo_corpus"
    assert stage_making("data/mosi", REPO / "dvc.yaml") is None
    stages = {"stages": {"fetch": {"cmd": "x", "outs": [{"data/mosi": {"cache": False}}]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert stage_making("data/mosi", tmp_path / "dvc.yaml") == "fetch"
    assert stage_making("data/demo", tmp_path / "absent.yaml") is None

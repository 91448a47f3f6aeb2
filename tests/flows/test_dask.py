"""Scale-out: the feature-extract flow on prefect-dask's DaskTaskRunner, against Dask clusters reached by their
scheduler address (as workers on other machines would be), gives the default runner's store; and still does
when a worker's machine dies in the middle of extracting a source video."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, StateType

from features.store import FeatureStore
from flows.extract import feature_extract, make_task_runner
from flows.params import RunConfig
from tests.support.dask_cluster import DaskCluster, computed_key, dask_cluster, wait_for_extraction

FIELDS = ("audio", "vision", "face_mask", "input_ids", "attention_mask", "label", "split", "text", "media_sha256")


def extract(dataset, out, cache_dir, run: dict) -> State:
    flow = feature_extract.with_options(task_runner=make_task_runner(RunConfig(**run)))
    return flow(
        data=str(dataset),
        out=str(out),
        cache_dir=str(cache_dir),
        overrides={"face": {"fps": 2.0}},
        return_state=True,
    )


def assert_same_stores(a_path, b_path, clips: int) -> None:
    """Every field of every clip, and the provenance, are equal."""
    with FeatureStore(a_path) as a, FeatureStore(b_path) as b:
        assert a.keys() == b.keys() and len(a) == clips
        for key in a.keys():
            x, y = a.read(key), b.read(key)
            for field in FIELDS:
                assert np.array_equal(getattr(x, field), getattr(y, field)), f"{key}: {field} differs"
        assert a.provenance == b.provenance


@pytest.mark.slow
def test_dask_cluster_gives_the_same_arrays_as_the_thread_runner(mosi_dataset, tmp_path, prefect_server):
    threads = extract(mosi_dataset, tmp_path / "threads.h5", tmp_path / "cache-threads", {"task_runner": "threads"})
    # distributed types dashboard_address as str, but None (no dashboard) is documented; and it types __enter__
    # and run() for both its sync and async uses: used synchronously they give the cluster and a dict
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,  # pyright: ignore[reportArgumentType]
        Client(cluster) as client,
    ):
        dask = extract(
            mosi_dataset,
            tmp_path / "dask.h5",
            tmp_path / "cache-dask",
            {"task_runner": "dask", "dask_address": cast(LocalCluster, cluster).scheduler_address},
        ).result()
        executed = cast(dict, client.run(lambda dask_worker: dask_worker.state.executed_count))
    assert threads.result()["sources"]["extracted"] == dask["sources"]["extracted"] == 3 and dask["failed"] == 0
    assert sum(executed.values()) >= 3, f"the source videos did not run on the Dask workers: {executed}"
    assert_same_stores(tmp_path / "threads.h5", tmp_path / "dask.h5", clips=3)


@pytest.fixture
def cli_cluster(tmp_path) -> Iterator[DaskCluster]:
    """`dask scheduler` and two `dask worker` commands, as on three machines; all stopped after the test."""
    with dask_cluster(tmp_path / "dask-cluster", workers=2) as cluster:
        yield cluster


def recorded_task_runs(flow_run_id, count: int, timeout: float = 30) -> dict[str, StateType | None]:
    """Task run name -> state type, as the Prefect server recorded them once ``count`` runs are final (the
    server records the states that workers emit as events, a moment after they happen), or as they are then."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            done = len(runs) == count and all(run.state is not None and run.state.is_final() for run in runs)
            if done or time.monotonic() > deadline:
                return {run.name: run.state_type for run in runs}
            time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_killed_mid_extraction_is_retried_on_another(mosi_dataset, tmp_path, prefect_server, cli_cluster):
    """SIGKILL a worker's machine (nanny and worker process) while it is extracting a source, caught in the act
    from the scheduler: Dask runs the task again on the other worker, whose story shows it, and the run ends with
    every clip, every Prefect task run Completed, and the thread runner's store."""
    threads = extract(mosi_dataset, tmp_path / "threads.h5", tmp_path / "cache-threads", {"task_runner": "threads"})
    pids = cli_cluster.worker_pids()

    def kill_an_extracting_worker() -> tuple[str, str]:
        address, key = wait_for_extraction(cli_cluster.client, timeout=300)
        name = cli_cluster.worker_names()[address]
        cli_cluster.machines[name].kill()
        return name, key

    with ThreadPoolExecutor(1) as pool:
        killing = pool.submit(kill_an_extracting_worker)
        dask_state = extract(
            mosi_dataset,
            tmp_path / "dask.h5",
            tmp_path / "cache-dask",
            {"task_runner": "dask", "dask_address": cli_cluster.address},
        )
        killed, key = killing.result()
    dask = dask_state.result()

    assert not psutil.pid_exists(pids[killed]), f"{killed}'s worker process outlived its machine"
    survivors = set(cli_cluster.worker_names().values())
    assert survivors == set(pids) - {killed}, f"a worker restarted or vanished: {survivors}"
    ran = cast(dict, cli_cluster.client.run(computed_key, key=key))
    assert any(ran.values()), f"{key}, killed on {killed}, was not run again on {survivors}"
    assert dask["failed"] == 0 and dask["clips"] == 3 and dask["sources"]["failed"] == 0
    assert threads.result()["sources"]["extracted"] == 3
    states = recorded_task_runs(dask_state.state_details.flow_run_id, count=3)
    assert len(states) == 3 and set(states.values()) == {StateType.COMPLETED}, states
    assert_same_stores(tmp_path / "threads.h5", tmp_path / "dask.h5", clips=3)

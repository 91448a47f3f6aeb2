"""Scale-out: the feature-extract flow on prefect-dask's DaskTaskRunner, against a local 2-worker Dask cluster
reached by its scheduler address (as workers on other machines would be), gives the default runner's store."""

from typing import cast

import numpy as np
import pytest
from distributed import Client, LocalCluster

from features.store import FeatureStore
from flows.extract import feature_extract, make_task_runner
from flows.params import RunConfig

FIELDS = ("audio", "vision", "face_mask", "input_ids", "attention_mask", "label", "split", "text", "media_sha256")


def extract(dataset, out, cache_dir, run: dict) -> dict:
    flow = feature_extract.with_options(task_runner=make_task_runner(RunConfig(**run)))
    return flow(dataset=str(dataset), out=str(out), cache_dir=str(cache_dir), overrides={"face": {"fps": 2.0}})


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
        )
        executed = cast(dict, client.run(lambda dask_worker: dask_worker.state.executed_count))
    assert threads["sources"]["extracted"] == dask["sources"]["extracted"] == 3 and dask["failed"] == 0
    assert sum(executed.values()) >= 3, f"the source videos did not run on the Dask workers: {executed}"

    with FeatureStore(tmp_path / "threads.h5") as a, FeatureStore(tmp_path / "dask.h5") as b:
        assert a.keys() == b.keys() and len(a) == 3
        for key in a.keys():
            x, y = a.read(key), b.read(key)
            for field in FIELDS:
                assert np.array_equal(getattr(x, field), getattr(y, field)), f"{key}: {field} differs"
        assert a.provenance == b.provenance

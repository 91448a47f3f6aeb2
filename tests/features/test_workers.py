"""Extraction in worker processes: the same shards as in-process extraction, and a dead worker costs only its pool."""

import os
import signal

import numpy as np
import psutil
import pytest

from features.cache import ShardCache, segments_hash
from features.config import ExtractConfig, FaceConfig, Modality
from features.datasets import load_dataset
from features.extract import SourceStatus, extract_source, source_segments, thread_extractors
from features.workers import ExtractionProcesses, WorkerLost

CONFIG = ExtractConfig(face=FaceConfig(fps=2.0, max_side=320))


def worker_pids() -> list[int]:
    """This process' spawned pool workers (not multiprocessing's resource tracker)."""
    return [p.pid for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]


def shards(cache: ShardCache, source, config: ExtractConfig) -> dict[str, np.ndarray]:
    """Both modalities' shard arrays of one source, as the cache returns them."""
    sha = cache.media_hashes.sha256(source.media)
    extractors = thread_extractors(config)
    seg = segments_hash(source_segments(source))
    out = {}
    for modality in (Modality.AUDIO, Modality.VISION):
        loaded = cache.load(modality, sha, extractors.key(modality), seg)
        assert loaded is not None, f"{source.media}: no {modality.value} shard"
        out.update({f"{modality.value}/{k}": v for k, v in loaded.items()})
    return out


def test_worker_processes_write_the_shards_a_thread_writes(mosi_dataset, tmp_path):
    sources = load_dataset(mosi_dataset).sources
    here, there = ShardCache(tmp_path / "here"), tmp_path / "there"
    with ExtractionProcesses(2, CONFIG, str(there)) as workers:
        summaries = [workers.extract(s) for s in sources]
    assert [s.status for s in summaries] == [SourceStatus.EXTRACTED] * len(sources)
    assert [s.clips for s in summaries] == [len(s.clips) for s in sources]
    for source in sources:
        assert extract_source(source, CONFIG, here).status is SourceStatus.EXTRACTED
        mine, theirs = shards(here, source, CONFIG), shards(ShardCache(there), source, CONFIG)
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.array_equal(mine[key], theirs[key]), key
    # the workers recorded the provenance, so the merge in this process loads no model for it
    for modality in Modality:
        assert ShardCache(there).load_provenance(modality, thread_extractors(CONFIG).key(modality)) is not None


def test_a_dead_worker_fails_its_source_and_a_fresh_pool_takes_the_next(mosi_dataset, tmp_path):
    first, second = load_dataset(mosi_dataset).sources[:2]
    with ExtractionProcesses(1, CONFIG, str(tmp_path / "cache")) as workers:
        (pid,) = worker_pids()
        os.kill(pid, signal.SIGKILL)  # the pool may notice before or after the next submit: either way
        with pytest.raises(WorkerLost, match=str(first.media)):
            workers.extract(first)
        assert workers.extract(second).status is SourceStatus.EXTRACTED
        assert pid not in worker_pids() and len(worker_pids()) == 1
    assert worker_pids() == []

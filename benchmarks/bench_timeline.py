"""A subtitled long video scored as a timeline against its clips scored one file at a time: whole processes.

Run: flock /tmp/bench.lock .venv/bin/python -m benchmarks.bench_timeline [--model build/demo/model] [--repeats 2]
The long video is the real MOSI clips end to end (tests/support/long_video.py: lossless, with an SRT of their
transcripts). Three ways to score the same spans, each a fresh `selfmm predict` process with a cold shard cache, in
turns: the long video with --subtitles (decoded once); each clip's file as its own process (what a user without
timelines runs); and one process over a folder of the clip files with <clip>.txt transcripts. It prints wall
seconds, CPU seconds and peak RSS of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.data import MOSI_CLIPS, MOSI_MEDIA
from tests.support.long_video import LongVideo, make_long_video

REPO = Path(__file__).resolve().parents[1]
SELFMM = [sys.executable, "-m", "flows.cli", "predict"]


def run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS in MB of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def timeline(video: LongVideo, model: str, work: Path) -> tuple[float, float, float]:
    cache = work / "cache-timeline"
    shutil.rmtree(cache, ignore_errors=True)
    args = [str(video.path), "--subtitles", str(video.subtitles), "--model", model, "--out", str(work / "timeline")]
    return run([*SELFMM, *args, "--cache-dir", str(cache)])


def one_file_at_a_time(video: LongVideo, model: str, work: Path) -> tuple[float, float, float]:
    cache = work / "cache-files"
    shutil.rmtree(cache, ignore_errors=True)
    runs = [
        run([*SELFMM, str(p.alone), "--text", p.text, "--model", model, "--cache-dir", str(cache)]) for p in video.parts
    ]
    return sum(r[0] for r in runs), sum(r[1] for r in runs), max(r[2] for r in runs)


def one_folder(folder: Path, model: str, work: Path) -> tuple[float, float, float]:
    cache = work / "cache-folder"
    shutil.rmtree(cache, ignore_errors=True)
    args = [str(folder), "--model", model, "--out", str(work / "predictions.csv"), "--cache-dir", str(cache)]
    return run([*SELFMM, *args])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "build" / "demo" / "model"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = {name: (MOSI_MEDIA / f"{name}.mp4", text) for name, (text, _) in MOSI_CLIPS.items()}
        video = make_long_video(work / "media", clips)
        folder = work / "folder"
        folder.mkdir()
        for part in video.parts:
            shutil.copy(part.alone, folder / part.alone.name)
            (folder / f"{part.name}.txt").write_text(part.text)
        seconds = video.parts[-1].end
        ways = {
            "long video + subtitles, one process": lambda: timeline(video, args.model, work),
            f"{len(video.parts)} clip files, one process each": lambda: one_file_at_a_time(video, args.model, work),
            f"{len(video.parts)} clip files, one process (folder)": lambda: one_folder(folder, args.model, work),
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, way in ways.items():  # in turns, so drifts in the machine's speed fall on all alike
                results[name].append(way())
    print(f"{len(video.parts)} real MOSI clips, {seconds:.1f} s of media; cold shard cache; {args.repeats} runs each")
    print(f"{'how':48s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS MB':>12s}")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{name:48s} {wall:8.1f} {cpu:8.1f} {max(r[2] for r in runs):12.0f}")


if __name__ == "__main__":
    main()

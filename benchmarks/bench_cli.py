"""`selfmm extract` as a whole process on the six clips of bench_extract.py: wall seconds, cold and warm cache.

Run: flock /tmp/bench.lock .venv/bin/python -m benchmarks.bench_cli [--repeats 3]
(from another checkout, with this venv, to time that checkout's code)
Each run is a fresh `selfmm extract` process in a scratch project (its own ``.prefect/``, no PREFECT_API_URL, its
own free port), as a user or a DVC stage runs it: imports, the Prefect API, the flow, extraction and the store
write. The first command starts the project's local Prefect server; it is timed apart, and the server is stopped
at the end. Besides wall seconds, the CPU seconds of the process and its children (user + system): on a machine
shared with other jobs they move less than the wall time does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.bench_extract import CLIPS
from features.media import decode

REPO = Path(__file__).resolve().parents[1]
SELFMM = [sys.executable, "-m", "flows.cli"]  # the console script's code, from this checkout (see scratch_env)


def make_dataset(root: Path) -> float:
    """An MMSA-layout folder of the clips; returns their total media seconds."""
    rows = ["video_id,clip_id,text,label,mode"]
    seconds = 0.0
    for i, clip in enumerate(CLIPS):
        target = root / "Raw" / f"v{i}" / f"c{i}{clip.suffix}"
        target.parent.mkdir(parents=True)
        shutil.copyfile(clip, target)
        rows.append(f"v{i},c{i},a short sentence,0.5,train")
        seconds += decode(clip, fps=10.0, max_side=64).duration  # as bench_extract.py counts them
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    return seconds


def scratch_env(root: Path) -> dict[str, str]:
    """The scratch project's environment: its own Prefect home, no configured API, this checkout's code."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(root / ".prefect"), "PYTHONPATH": str(REPO)}


def write_params(root: Path) -> None:
    """The project's params.yaml with a free port for the scratch project's Prefect server."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        params["serve"]["port"] = s.getsockname()[1]
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def extract(root: Path, cache: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``selfmm extract`` process."""
    env = scratch_env(root)
    command = [*SELFMM, "extract", "--dataset", "data", "--out", "features.h5", "--cache-dir", cache]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def summary(runs: list[tuple[float, float]]) -> str:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return (
        f"median {statistics.median(walls):.2f} s wall ({', '.join(f'{t:.2f}' for t in walls)}), "
        f"{statistics.median(cpus):.2f} s CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds = make_dataset(root / "data")
        write_params(root)
        try:
            first = extract(root, str(root / "cache-first"))
            cold = [extract(root, str(root / f"cache-{i}")) for i in range(args.repeats)]
            warm = [extract(root, str(root / "cache-0")) for _ in range(args.repeats)]
        finally:
            subprocess.run([*SELFMM, "server", "stop"], cwd=root, env=scratch_env(root), capture_output=True)
    print(f"clips: {len(CLIPS)}, media {seconds:.1f} s")
    print(f"first command (starts the local server), cold cache: {first[0]:.2f} s wall, {first[1]:.2f} s CPU")
    print(f"cold cache: {summary(cold)}")
    print(f"warm cache: {summary(warm)}")


if __name__ == "__main__":
    main()

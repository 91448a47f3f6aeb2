"""`selfmm extract` as a whole process on the six clips of bench_extract.py: wall seconds, cold and warm cache.

Run: flock /tmp/bench.lock .venv/bin/python benchmarks/bench_cli.py [--repeats 3]
Each run is a fresh `selfmm extract` process in a scratch project (its own ``.prefect/``, no PREFECT_API_URL),
as a user or a DVC stage runs it: imports, the Prefect API, the flow, extraction and the store write. The first
command may start the project's local Prefect server; it is timed apart, and the server is stopped at the end.
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

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_extract import CLIPS  # noqa: E402  (after the path above)
from features.media import decode  # noqa: E402


def make_dataset(root: Path) -> float:
    """An MMSA-layout folder of the clips; returns their total media seconds."""
    rows = ["video_id,clip_id,text,label,mode"]
    seconds = 0.0
    for i, clip in enumerate(CLIPS):
        target = root / "Raw" / f"v{i}" / f"c{i}{clip.suffix}"
        target.parent.mkdir(parents=True)
        shutil.copyfile(clip, target)
        rows.append(f"v{i},c{i},a short sentence,0.5,train")
        seconds += decode(clip, fps=1.0, max_side=64).duration
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    return seconds


def extract(root: Path, cache: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(root / ".prefect")
    command = [str(BIN / "selfmm"), "extract", "--dataset", "data", "--out", "features.h5", "--cache-dir", cache]
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds = make_dataset(root / "data")
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
        try:
            first = extract(root, str(root / "cache-first"))
            cold = [extract(root, str(root / f"cache-{i}")) for i in range(args.repeats)]
            warm = [extract(root, str(root / "cache-0")) for _ in range(args.repeats)]
        finally:
            env = {**os.environ, "PREFECT_HOME": str(root / ".prefect")}
            subprocess.run([str(BIN / "selfmm"), "server", "stop"], cwd=root, env=env, capture_output=True)
    print(f"clips: {len(CLIPS)}, media {seconds:.1f} s")
    print(f"first command (may start the local server), cold cache: {first:.2f} s")
    print(f"cold cache: median {statistics.median(cold):.2f} s  ({', '.join(f'{t:.2f}' for t in cold)})")
    print(f"warm cache: median {statistics.median(warm):.2f} s  ({', '.join(f'{t:.2f}' for t in warm)})")


if __name__ == "__main__":
    main()

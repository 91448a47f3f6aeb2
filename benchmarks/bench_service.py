"""Latency of the model service: the whole POST /predict request (upload, decode, features, model, answer), as a
client sees it, against ``selfmm serve-model`` started as its own process on a free loopback port.

Prints p50 and p95 over ``--requests`` predictions of one clip, sent ``--concurrency`` at a time, after
``--warmup`` requests that build each prediction thread's extractors.

    python benchmarks/bench_service.py --model build/demo/model --clip data/demo/Raw/feat_f13_000/001.mp4
    python benchmarks/bench_service.py --model models/demo/champion --clip CLIP --concurrency 4 --requests 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.data import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundle or models/<dataset>/champion")
    parser.add_argument("--clip", required=True, type=Path)
    parser.add_argument("--text", default="Wow, the trailer completely blew me away.")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "flows.cli", "serve-model", "--model", args.model, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}"
    content = args.clip.read_bytes()
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"serve-model exited:\n{server.stderr.read() if server.stderr else ''}")
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            startup = time.perf_counter() - started

            def one(_: int) -> float:
                t = time.perf_counter()
                answer = client.post("/predict", files={"file": (args.clip.name, content)}, data={"text": args.text})
                answer.raise_for_status()
                return time.perf_counter() - t

            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(one, range(max(args.warmup, args.concurrency))))
                seconds = sorted(pool.map(one, range(args.requests)))
            release = client.get("/health").json()["release"]
    finally:
        server.terminate()
        server.wait(30)
    p50 = statistics.median(seconds)
    p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]
    print(
        json.dumps(
            {
                "model": args.model,
                "release": release,
                "clip": str(args.clip),
                "clip_bytes": len(content),
                "requests": len(seconds),
                "concurrency": args.concurrency,
                "startup_s": round(startup, 2),
                "p50_s": round(p50, 3),
                "p95_s": round(p95, 3),
                "mean_s": round(statistics.fmean(seconds), 3),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

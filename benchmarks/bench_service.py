"""Latency of the model service: the whole POST /predict request (upload, decode, features, model, answer), as a
client sees it, against ``selfmm serve-model`` started as its own process on a free loopback port.

Prints p50 and p95 over ``--requests`` predictions of one clip, sent ``--concurrency`` at a time, after
``--warmup`` requests that build each prediction thread's extractors.

With ``--soak``, the requests mix the clip with bad uploads (garbage bytes, an empty file, a text file, a truncated
mp4, no file field, a 1 MB transcript), and every answer is checked: the clip must get 200 and the very scores of
a reference prediction, a bad upload its 4xx, never a 500 or a 200. Prints the wrong answers, the status counts,
p50 and p95, and the service's resident memory at the start, after the warm-up and at the end.

    python -m benchmarks.bench_service --model build/demo/model --clip data/demo/Raw/feat_f13_000/001.mp4
    python -m benchmarks.bench_service --model models/demo/champion --clip CLIP --concurrency 4 --requests 40
    python -m benchmarks.bench_service --model build/demo/model --clip CLIP --soak --requests 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfmm.batch import SCORE_NAMES
from tests.support.data import free_port

GOOD = "good clip"
SCORES = tuple(SCORE_NAMES.values())


@dataclass(frozen=True)
class Case:
    """One kind of request of the soak and the status it must get."""

    name: str
    status: int
    files: dict[str, tuple[str, bytes]]
    data: dict[str, str]


def soak_cases(clip: Path, text: str) -> list[Case]:
    """The clip, and each kind of bad upload a client may send."""
    content = clip.read_bytes()
    garbage = random.Random(0).randbytes(64 * 1024)
    return [
        Case(GOOD, 200, {"file": (clip.name, content)}, {"text": text}),
        Case("garbage bytes", 422, {"file": ("garbage.mp4", garbage)}, {"text": text}),
        Case("empty file", 400, {"file": ("empty.mp4", b"")}, {"text": text}),
        Case("text file", 422, {"file": ("notes.txt", b"not a video, just some words\n" * 100)}, {}),
        Case("truncated mp4", 422, {"file": ("cut.mp4", content[: len(content) // 2])}, {"text": text}),
        Case("no file field", 400, {"other": ("a.txt", b"x")}, {"text": text}),
        Case("1 MB transcript", 413, {"file": (clip.name, content)}, {"text": "word " * (2**20 // 5)}),
    ]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def service(model: str) -> Iterator[tuple[subprocess.Popen, httpx.Client, float]]:
    """``selfmm serve-model`` on a free port, until the block ends: the process, a client, its startup seconds."""
    port = free_port()
    cmd = [sys.executable, "-m", "flows.cli", "serve-model", "--model", model, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"serve-model exited:\n{server.stderr.read() if server.stderr else ''}")
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            yield server, client, time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)


def percentiles(seconds: list[float]) -> dict[str, float]:
    seconds = sorted(seconds)
    p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]
    return {"p50_s": round(statistics.median(seconds), 3), "p95_s": round(p95, 3)}


def latency(args: argparse.Namespace) -> dict:
    """p50 and p95 of predictions of the clip."""
    content = args.clip.read_bytes()
    with service(args.model) as (_, client, startup):

        def one(_: int) -> float:
            t = time.perf_counter()
            answer = client.post("/predict", files={"file": (args.clip.name, content)}, data={"text": args.text})
            answer.raise_for_status()
            return time.perf_counter() - t

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(max(args.warmup, args.concurrency))))
            seconds = list(pool.map(one, range(args.requests)))
        release = client.get("/health").json()["release"]
    return {
        "model": args.model,
        "release": release,
        "clip": str(args.clip),
        "clip_bytes": len(content),
        "requests": len(seconds),
        "concurrency": args.concurrency,
        "startup_s": round(startup, 2),
        **percentiles(seconds),
        "mean_s": round(statistics.fmean(seconds), 3),
        "cpus": os.cpu_count(),
    }


def wrong_answer(case: Case, answer: httpx.Response, reference: dict | None) -> str | None:
    """Why an answer is wrong for its case, or None: the status, and for the clip the scores."""
    if answer.status_code != case.status:
        return f"{case.name}: {answer.status_code}, expected {case.status}: {answer.text[:200]}"
    if case.name == GOOD and reference is not None:
        body = answer.json()
        differ = {k: (body[k], reference[k]) for k in SCORES if body[k] != reference[k]}
        if differ:
            return f"{case.name}: scores differ from the reference (given, reference): {differ}"
    return None


def soak(args: argparse.Namespace) -> dict:
    """``--requests`` requests, ``--concurrency`` at a time, half the clip and half bad uploads, each checked."""
    cases = soak_cases(args.clip, args.text)
    good, bad = cases[0], cases[1:]
    plan = [good if i % 2 == 0 else bad[(i // 2) % len(bad)] for i in range(args.requests)]
    random.Random(1).shuffle(plan)
    with service(args.model) as (server, client, startup):
        rss = {"start": rss_mb(server.pid)}

        def send(case: Case) -> tuple[Case, httpx.Response, float]:
            t = time.perf_counter()
            answer = client.post("/predict", files=case.files, data=case.data)
            return case, answer, time.perf_counter() - t

        _, first, _ = send(good)
        first.raise_for_status()
        reference = first.json()
        with ThreadPoolExecutor(args.concurrency) as pool:
            warm = list(pool.map(send, [good] * max(args.warmup, args.concurrency)))
            rss["after_warmup"] = rss_mb(server.pid)
            started = time.perf_counter()
            answers = list(pool.map(send, plan))
            wall = time.perf_counter() - started
        rss["end"] = rss_mb(server.pid)
        health = client.get("/health").json()
    wrong = [w for case, answer, _ in warm + answers if (w := wrong_answer(case, answer, reference))]
    return {
        "model": args.model,
        "release": health["release"],
        "verified": health["verified"],
        "clip": str(args.clip),
        "requests": len(answers),
        "concurrency": args.concurrency,
        "startup_s": round(startup, 2),
        "wall_s": round(wall, 1),
        "wrong_answers": len(wrong),
        "wrong": wrong[:20],
        "status_counts": dict(sorted(Counter(answer.status_code for _, answer, _ in answers).items())),
        "by_case": dict(Counter(f"{case.name} -> {answer.status_code}" for case, answer, _ in answers)),
        "all": percentiles([s for _, _, s in answers]),
        "good_clip": percentiles([s for case, _, s in answers if case is good]),
        "service_rss_mb": rss,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundle or models/<dataset>/champion")
    parser.add_argument("--clip", required=True, type=Path)
    parser.add_argument("--text", default="Wow, the trailer completely blew me away.")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--soak", action="store_true", help="mix in bad uploads and check every answer")
    args = parser.parse_args()
    print(json.dumps(soak(args) if args.soak else latency(args), indent=2))


if __name__ == "__main__":
    main()

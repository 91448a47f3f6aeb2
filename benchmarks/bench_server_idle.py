"""What a user's commands leave running: the CPU the project's processes use in the 60 s after a command ends.

Run: flock /tmp/bench.lock .venv/bin/python -m benchmarks.bench_server_idle [--seconds 60]
(from another checkout, with this venv, to measure that checkout's code)
In a scratch git+DVC project (its own ``.prefect/``, no PREFECT_API_URL, a free port, one real MOSI clip), two
cases, each from no server: ``dvc repro`` of a one-stage pipeline that runs ``selfmm extract``, and the same
``selfmm extract`` run by hand. After each, every process whose working directory is the project (the local
Prefect server, its watchdog) is sampled once a second for ``--seconds``: their CPU seconds (user + system), as a
share of one core, the busiest process's share, and how many were left at the start and the end of the window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "mosi" / "media" / "0h-zjBukYpk_1.mp4"
SELFMM = f"{sys.executable} -m flows.cli"  # the console script's code, from this checkout (see scratch_env)


def scratch_project(root: Path) -> dict[str, str]:
    """A git+DVC project with the clip as a dataset, a free port and a one-stage dvc.yaml; its environment."""
    (root / "data/Raw/v").mkdir(parents=True)
    shutil.copyfile(CLIP, root / "data/Raw/v/c.mp4")
    (root / "data/label.csv").write_text("video_id,clip_id,text,label,mode\nv,c,a short sentence,0.5,train\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        params["serve"]["port"] = s.getsockname()[1]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    extract = f"{SELFMM} extract --dataset data --out features.h5"
    (root / "dvc.yaml").write_text(
        f"stages:\n  extract:\n    cmd: {extract}\n    deps: [data]\n    outs: [features.h5]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # dvc and git hooks from this venv
    env = {
        **env,
        "PATH": path,
        "PREFECT_HOME": str(root / ".prefect"),
        "PYTHONPATH": str(REPO),
        "DVC_NO_ANALYTICS": "1",
    }
    for command in ("git init -q", "dvc init -q"):
        subprocess.run(command.split(), cwd=root, env=env, check=True)
    return env


def ours(root: Path) -> list[psutil.Process]:
    """The processes whose working directory is the project."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.cwd() == str(root):
                found.append(process)
        except psutil.Error:
            continue
    return found


def idle_cpu(root: Path, seconds: float) -> str:
    """CPU of the project's processes over ``seconds``, sampled once a second (a process that ends counts up to
    its last sample)."""
    start = {p.pid: (p, sum(p.cpu_times()[:2])) for p in ours(root)}
    last = {pid: cpu for pid, (_, cpu) in start.items()}
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        time.sleep(1.0)
        for pid, (process, _) in start.items():
            try:
                last[pid] = sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
    wall = time.monotonic() - began
    used = {pid: last[pid] - cpu for pid, (_, cpu) in start.items()}
    left = len(ours(root))
    busiest = max(used.values(), default=0.0)
    return (
        f"{sum(used.values()):.2f} s CPU in {wall:.0f} s = {100 * sum(used.values()) / wall:.2f}% of a core "
        f"(busiest process {100 * busiest / wall:.2f}%); processes at the start {len(start)}, at the end {left}"
    )


def stop_everything(root: Path, env: dict[str, str]) -> None:
    subprocess.run([*SELFMM.split(), "server", "stop"], cwd=root, env=env, capture_output=True)
    for process in ours(root):
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    print(f"checkout {REPO} at {head.stdout.strip()}; {os.cpu_count()} cores", flush=True)
    by_hand = [*SELFMM.split(), "extract", "--dataset", "data", "--out", "by-hand.h5"]
    cases = {
        "after `dvc repro`": [sys.executable, "-m", "dvc", "repro", "-q"],
        "after `selfmm extract` by hand": by_hand,
    }
    for name, command in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp).resolve()
            env = scratch_project(root)
            try:
                subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
                print(f"{name}: {idle_cpu(root, args.seconds)}", flush=True)
            finally:
                stop_everything(root, env)


if __name__ == "__main__":
    main()

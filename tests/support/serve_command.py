"""`selfmm serve` as a user runs it, in a subprocess of its own, and what it leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.projects import BIN, env

READY = "Ctrl-C stops serving."


@contextmanager
def serving(root: Path, port: int, timeout: float = 240):
    """`selfmm serve --port` in ``root`` (its own process group, as in a terminal); Ctrl-C on exit."""
    log = root / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "selfmm"), "serve", "--port", str(port)],
            cwd=root,
            env=env(root),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while READY not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"serve did not stop within 60 s of Ctrl-C:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, log.read_text()[-3000:]


def processes_in(root: Path) -> list[str]:
    """Command lines of the processes whose working directory is ``root``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(root):
                found.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return found


def flow_run_id(output: str) -> str:
    """The id of the flow run that `prefect deployment run` created."""
    return next(line.split("UUID:")[1].strip() for line in output.splitlines() if "UUID:" in line)


def finished(client, run_id: str, timeout: float = 120):
    """The flow run, once it reached a final state."""
    deadline = time.monotonic() + timeout
    while not (run := client.read_flow_run(run_id)).state.is_final():
        assert time.monotonic() < deadline, f"flow run {run_id} still {run.state.name}"
        time.sleep(1)
    return run

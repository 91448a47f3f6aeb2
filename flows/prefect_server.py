"""A Prefect server on loopback: the configured one, one already answering, or ``prefect server start`` as a child
(``selfmm serve``'s, for as long as it runs; flows/local_server.py's, shared by flow commands).

Light on imports: flow commands call it before anything heavy loads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from features.errors import PipelineError

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 120.0  # seconds for a new server to answer (about 11 s on a new database here)
GRACE = 10.0  # seconds a process gets between SIGTERM and SIGKILL


class PrefectServerError(PipelineError):
    """The Prefect server could not be reached or started."""


@dataclass
class PrefectAPI:
    url: str
    server: subprocess.Popen | None  # the server this command started, if it started one


@contextmanager
def prefect_api(port: int) -> Iterator[PrefectAPI]:
    """Connect to the configured or already running server, or start one, stopped again on exit."""
    configured = configured_api()
    if configured:
        yield PrefectAPI(configured, None)
        return
    url = f"http://{LOOPBACK}:{port}/api"
    if healthy(url):
        yield PrefectAPI(url, None)
        return
    check_port_free(port)
    home = Path(os.environ.get("PREFECT_HOME") or ".prefect")
    with prefect_server(home, port) as server:
        yield PrefectAPI(url, server)


def configured_api() -> str | None:
    """``PREFECT_API_URL``, if set: a PrefectServerError when no server answers there."""
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured and not healthy(configured):
        raise PrefectServerError(
            f"no Prefect server answers at PREFECT_API_URL={configured}: start it, or unset "
            f"PREFECT_API_URL and `selfmm serve` starts one on {LOOPBACK}"
        )
    return configured or None


def check_port_free(port: int) -> None:
    """A PrefectServerError when something that is not a Prefect server listens on the port."""
    with socket.socket() as s:
        if s.connect_ex((LOOPBACK, port)) == 0:
            raise PrefectServerError(
                f"{LOOPBACK}:{port} is taken by something that is not a Prefect server; "
                f"choose another port (selfmm serve --port, or params serve.port)"
            )


@contextmanager
def prefect_server(home: Path, port: int, timeout: float = STARTUP_TIMEOUT) -> Iterator[subprocess.Popen]:
    """``prefect server start`` on 127.0.0.1:port with ``home`` as PREFECT_HOME, in its own process group, which
    is stopped, all of it, on exit. Its log is ``home/server.log``."""
    server = start_server(home, port)
    try:
        wait_healthy(f"http://{LOOPBACK}:{port}/api", server, timeout, home / "server.log")
        yield server
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # this process's last log lines, while the server still listens
        stop_process(server)


def start_server(home: Path, port: int, new_session: bool = True) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:port, state and log in ``home``, leading a process group of its own
    (or, without ``new_session``, in its parent's)."""
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://{LOOPBACK}:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home.resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # the UI asks /ui-settings where its API is; without these it names the default port, not this one
        "PREFECT_SERVER_API_HOST": LOOPBACK,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": url,
        # flow-run logs streamed to watchers: `prefect deployment run --watch` shows why a run failed
        "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
        "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
    }
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=new_session,
        )


def wait_healthy(url: str, server: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if server.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise PrefectServerError(
                f"prefect server exited with code {server.returncode} before answering; {log_path}:\n{tail}"
            )
        if time.monotonic() > deadline:
            raise PrefectServerError(f"prefect server did not answer at {url} within {timeout:.0f} s; see {log_path}")
        time.sleep(0.5)


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at ``url`` (``http://host:port/api``), asked directly,
    never through an HTTP proxy from the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def stop_process(process: subprocess.Popen, grace: float = GRACE, group: bool = True) -> None:
    """SIGTERM, then SIGKILL to what is left after ``grace`` seconds: to the process group led by ``process``, or
    without ``group`` to ``process`` alone (a server in its watchdog's group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)  # nothing if it has ended
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()

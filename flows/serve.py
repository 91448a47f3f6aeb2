"""``selfmm serve``: a Prefect server on loopback and every deployment of params.yaml, in one process tree.

The server is the one ``PREFECT_API_URL`` names (it must answer), else one already listening on
127.0.0.1:<port>, else a ``prefect server start`` child with its state in the project's ``.prefect/``
(``PREFECT_HOME``). The deployments are served from this process: flow runs are its child processes. Ctrl-C or
SIGTERM stops the runner, ends flow runs still going, and stops the server if this command started it; nothing
is left behind.
"""

from __future__ import annotations

import asyncio
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
from typing import cast

import psutil
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import TerminationSignal
from prefect.logging.handlers import APILogWorker
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, temporary_settings

from features.errors import PipelineError
from flows.deployments import build_deployments, served_datasets
from flows.params import load_params

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 120.0  # seconds for a new server to answer (about 11 s on a new database here)
GRACE = 10.0  # seconds a process gets between SIGTERM and SIGKILL


class ServeError(PipelineError):
    """The Prefect server could not be reached or started."""


@dataclass
class PrefectAPI:
    url: str
    server: subprocess.Popen | None  # the server this command started, if it started one


def serve(port: int | None = None) -> None:
    """Serve every deployment until Ctrl-C or SIGTERM; params are checked before anything starts."""
    params = load_params()
    deployments = build_deployments(served_datasets(params), params.run)
    port = port or params.serve.port
    signal.signal(signal.SIGTERM, _interrupt)  # until the runner installs its own handler
    try:
        with prefect_api(port) as api, temporary_settings(updates={PREFECT_API_URL: api.url}):
            try:
                _run(api, deployments)
            finally:
                _ignore_signals()  # a second Ctrl-C must not cut the clean-up short
                end_children(keep=api.server)
    except (KeyboardInterrupt, TerminationSignal):
        pass  # everything this command started is stopped by now
    print("selfmm serve: stopped", flush=True)


def _run(api: PrefectAPI, deployments: list[RunnerDeployment]) -> None:
    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        runner.add_deployment(deployment)
    print(banner(api, deployments), flush=True)
    asyncio.run(runner.start())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def prefect_api(port: int) -> Iterator[PrefectAPI]:
    """Connect to the configured or already running server, or start one (stopped again on exit)."""
    configured = PREFECT_API_URL.value()
    if configured:
        if not healthy(configured):
            raise ServeError(
                f"no Prefect server answers at PREFECT_API_URL={configured}: start it, or unset "
                f"PREFECT_API_URL and `selfmm serve` starts one on {LOOPBACK}"
            )
        yield PrefectAPI(configured, None)
        return
    url = f"http://{LOOPBACK}:{port}/api"
    if healthy(url):
        yield PrefectAPI(url, None)
        return
    if _port_taken(port):
        raise ServeError(
            f"{LOOPBACK}:{port} is taken by something that is not a Prefect server; "
            f"choose another port (selfmm serve --port, or params serve.port)"
        )
    with prefect_server(Path(os.environ.get("PREFECT_HOME") or ".prefect"), port) as server:
        yield PrefectAPI(url, server)


@contextmanager
def prefect_server(home: Path, port: int, timeout: float = STARTUP_TIMEOUT) -> Iterator[subprocess.Popen]:
    """``prefect server start`` on 127.0.0.1:port with ``home`` as PREFECT_HOME, in its own process group, which
    is stopped, all of it, on exit. Its log is ``home/server.log``."""
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
    }
    env.pop("PREFECT_API_URL", None)
    log_path = home / "server.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, server, timeout, log_path)
        yield server
    finally:
        APILogWorker.drain_all(timeout=5)  # this process's last log lines, while the server still listens
        stop_group(server)


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if server.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServeError(
                f"prefect server exited with code {server.returncode} before answering; {log_path}:\n{tail}"
            )
        if time.monotonic() > deadline:
            raise ServeError(f"prefect server did not answer at {url} within {timeout:.0f} s; see {log_path}")
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


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def stop_group(process: subprocess.Popen, grace: float = GRACE) -> None:
    """SIGTERM to the process group led by ``process``, SIGKILL to what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def end_children(keep: subprocess.Popen | None, grace: float = GRACE) -> None:
    """End this process's descendants (flow runs the runner did not stop, their Dask workers), but not ``keep``."""
    children = [p for p in psutil.Process().children(recursive=True) if keep is None or p.pid != keep.pid]
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        child.kill()


def banner(api: PrefectAPI, deployments: list[RunnerDeployment]) -> str:
    """What is served and how to run it."""
    ui = api.url.removesuffix("/api")
    started = "started by this command, stopped with it" if api.server else "already running, left running"
    lines = [f"Prefect API {api.url} ({started}); UI {ui}", f"Serving {len(deployments)} deployments:"]
    names = [f"{d.flow_name}/{d.name}" for d in deployments]
    width = max(map(len, names))
    for name, d in zip(names, deployments):
        crons = [cast(CronSchedule, s.schedule) for s in d.schedules or []]  # build_deployments makes cron ones
        when = "; ".join(f"cron '{c.cron}' ({c.timezone})" for c in crons)
        lines.append(f"  {name:<{width}}  {when}".rstrip())
    example = names[0]
    lines += [
        "Run one from another shell:",
        f"  export PREFECT_API_URL={api.url}",
        f"  prefect deployment run {example} --watch",
        "Ctrl-C stops serving.",
    ]
    return "\n".join(lines)

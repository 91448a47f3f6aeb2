"""The local Prefect server that flow commands share (``selfmm extract``, ``train``, ``evaluate --report``,
``retrain`` and the DVC stages that run them): the first command starts it, and it stops itself once no command
needs it.

It runs detached, in a process group of its own: a watchdog (this module, ``python -m flows.local_server``) and its
child ``prefect server start``, with their state and log in PREFECT_HOME (the project's ``.prefect/``). Each command
takes a lease while it runs: a file in ``.prefect/selfmm-server.leases/`` that names the process whose life keeps
the server up. That is the command itself, or for a DVC stage the ``dvc`` process that runs it, so that the
stages of one ``dvc repro`` share one server. Once no lease is held, the watchdog stops the server: params
``serve.idle_stop_s`` after the last command run by hand ended (the next one finds it warm), at once after a
``dvc`` run. ``selfmm server stop`` stops it now.

Light on imports: flow commands call it before anything heavy loads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from filelock import FileLock

from flows.prefect_server import (
    GRACE,
    LOOPBACK,
    STARTUP_TIMEOUT,
    check_port_free,
    configured_api,
    healthy,
    start_server,
    stop_process,
    wait_healthy,
)

POLL = 1.0  # seconds between the watchdog's looks at the leases


@dataclass(frozen=True)
class LocalServerFiles:
    """What the local server keeps in PREFECT_HOME."""

    home: Path

    @classmethod
    def of_this_project(cls) -> LocalServerFiles:
        files = cls(Path(os.environ.get("PREFECT_HOME") or ".prefect").resolve())
        files.home.mkdir(parents=True, exist_ok=True)
        return files

    @property
    def pid(self) -> Path:
        return self.home / "selfmm-server.pid"  # the watchdog's, which leads the process group

    @property
    def lock(self) -> Path:
        return self.home / "selfmm-server.lock"  # held to take a lease, to start, and to decide to stop

    @property
    def leases(self) -> Path:
        return self.home / "selfmm-server.leases"

    @property
    def log(self) -> Path:
        return self.home / "server.log"


@dataclass(frozen=True)
class Lease:
    """A process whose life keeps the server up, and how long the server stays up after it ends."""

    pid: int
    started: float  # the process's start time: a later process with the same pid holds no lease
    linger: float | None  # seconds; None: until `selfmm server stop`

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self.started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def local_api(port: int, idle_stop: float | None, meanwhile: Callable[[], object] | None = None) -> str:
    """The Prefect API a flow command reports to, without a server start per command: the configured
    ``PREFECT_API_URL`` (it must answer), else the server answering on 127.0.0.1:port (``selfmm serve``'s, or
    the local one an earlier command started), else a local one started now, announced in one line on stderr.
    The command holds a lease on the local server until it ends (see the module's docstring). ``meanwhile`` runs
    while a server that this call starts boots (the command's own imports, on the other core)."""
    configured = configured_api()
    if configured:
        return configured
    files = LocalServerFiles.of_this_project()
    url = f"http://{LOOPBACK}:{port}/api"
    with FileLock(files.lock):
        under_dvc = take_lease(files, idle_stop)
        if healthy(url):
            return url
        check_port_free(port)
        _start_watchdog(files, port, meanwhile)
    if under_dvc:
        until = "when this dvc run ends"
    elif idle_stop is None:
        until = "with `selfmm server stop`"
    else:
        until = f"{idle_stop:g} s after the last command (params serve.idle_stop_s), or now with `selfmm server stop`"
    print(
        f"selfmm: started a local Prefect server, UI and API at {url.removesuffix('/api')} (state and log in "
        f"{files.home}); it stops {until}",
        file=sys.stderr,
        flush=True,
    )
    return url


def stop_local_server(home: Path) -> bool:
    """Stop the local server with state in ``home`` now; False if none was running."""
    files = LocalServerFiles(home)
    try:
        watchdog = psutil.Process(int(files.pid.read_text()))
        ours = "flows.local_server" in watchdog.cmdline()
    except (OSError, ValueError, psutil.Error):
        ours = False
    if not ours:
        files.pid.unlink(missing_ok=True)
        return False
    watchdog.terminate()  # it stops the server, then itself
    try:
        watchdog.wait(2 * GRACE)
    except psutil.TimeoutExpired:
        os.killpg(watchdog.pid, signal.SIGKILL)
    files.pid.unlink(missing_ok=True)
    return True


def take_lease(files: LocalServerFiles, idle_stop: float | None) -> bool:
    """Keep the local server up while this command runs (and ``idle_stop`` seconds after), or while the dvc run
    it is a stage of runs; whether it is a DVC stage."""
    holder, under_dvc = _lease_holder()
    lease = Lease(holder.pid, holder.create_time(), 0.0 if under_dvc else idle_stop)
    files.leases.mkdir(exist_ok=True)
    (files.leases / f"{lease.pid}.json").write_text(json.dumps(lease.__dict__))
    return under_dvc


def _lease_holder() -> tuple[psutil.Process, bool]:
    """The process whose life keeps the server up for this command: the ``dvc`` process that runs it as a stage
    (DVC sets DVC_STAGE), else the command itself; and whether it is dvc."""
    me = psutil.Process()
    if os.environ.get("DVC_STAGE"):
        for parent in me.parents():
            try:
                if any(Path(arg).name == "dvc" for arg in parent.cmdline()[:3]):
                    return parent, True
            except psutil.Error:
                continue
    return me, False


def _read_leases(files: LocalServerFiles) -> list[tuple[Path, Lease]]:
    leases = []
    for path in files.leases.glob("*.json"):
        try:
            leases.append((path, Lease(**json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: it keeps nothing up
    return leases


def _start_watchdog(files: LocalServerFiles, port: int, meanwhile: Callable[[], object] | None) -> None:
    """The watchdog and its server, detached in a process group of their own; runs ``meanwhile``, then returns
    once the server answers."""
    with open(files.log, "ab") as log:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "flows.local_server", "--home", str(files.home), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    files.pid.write_text(str(watchdog.pid))
    if meanwhile is not None:
        meanwhile()
    wait_healthy(f"http://{LOOPBACK}:{port}/api", watchdog, STARTUP_TIMEOUT, files.log)


def watch(home: Path, port: int) -> None:
    """The watchdog: run the server until no lease is held and the last one's linger has passed, or SIGTERM."""
    files = LocalServerFiles(home)
    signal.signal(signal.SIGTERM, _interrupt)
    server = start_server(home, port, new_session=False)  # in the watchdog's process group
    try:
        wait_healthy(f"http://{LOOPBACK}:{port}/api", server, STARTUP_TIMEOUT, files.log)
        stop_at: float | None = time.monotonic()  # the starting command's lease is written already
        while server.poll() is None:
            time.sleep(POLL)
            with FileLock(files.lock):
                stop_at = _look_at_leases(files, stop_at)
                if stop_at is not None and time.monotonic() >= stop_at:
                    print(f"selfmm: no command has used the server on port {port} lately: stopping it", flush=True)
                    files.pid.unlink(missing_ok=True)  # commands from now on start a new one
                    stop_process(server, group=False)  # under the lock: a new one waits until the port is free
                    return
    except KeyboardInterrupt:  # SIGTERM: `selfmm server stop`
        pass
    finally:
        stop_process(server, group=False)


def _look_at_leases(files: LocalServerFiles, stop_at: float | None) -> float | None:
    """When to stop, after dropping the leases whose holders ended: None while a lease is held or one that ended
    lingers for ever, else the latest moment a lease that ended asks the server to stay up until."""
    now = time.monotonic()
    held = False
    for path, lease in _read_leases(files):
        if lease.alive():
            held = True
            continue
        path.unlink(missing_ok=True)
        if lease.linger is None:
            return None
        stop_at = max(stop_at or now, now + lease.linger)
    return None if held else stop_at


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the watchdog of the local Prefect server (started by local_api)")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    watch(args.home, args.port)

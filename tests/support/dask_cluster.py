"""A Dask cluster started as users start one across machines: a `dask scheduler` process and `dask worker
<address>` processes (each with its nanny, in a process group of its own as on a machine of its own), on
loopback; and what a test needs to break it: which worker is extracting now, and killing that worker's machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from distributed import Client

from features import extract
from tests.support.data import REPO, free_port
from tests.support.projects import BIN

# The frames of the extraction proper, after the models are loaded: decoding and the extractors, before the
# shards are saved. A worker killed in one of them has written no shard of that source.
EXTRACTING = frozenset({extract._compute.__code__})  # pyright: ignore[reportPrivateUsage]


@dataclass
class Machine:
    """One `dask worker` command: the nanny, and the worker process it starts."""

    name: str
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL the whole group at once, nanny included: the machine is gone, nothing restarts the worker."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class DaskCluster:
    address: str
    client: Client  # connected to the scheduler, as any other machine would be
    machines: dict[str, Machine]  # by worker name

    def worker_names(self) -> dict[str, str]:
        """Worker address -> its name (the machine's), as the scheduler knows them now."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return {address: info["name"] for address, info in workers.items()}

    def worker_pids(self) -> dict[str, int]:
        """Worker name -> the pid of its worker process (the nanny's child)."""
        names = self.worker_names()
        return {names[address]: pid for address, pid in cast(dict, self.client.run(os.getpid)).items()}


def extracting_keys(dask_worker) -> list[str]:
    """Runs on a worker: the keys it is executing while one of its threads is inside the extraction proper."""
    in_extraction = any(
        frame.f_code in EXTRACTING
        for top in sys._current_frames().values()  # pyright: ignore[reportPrivateUsage]
        for frame, _ in traceback.walk_stack(top)
    )
    return [str(task.key) for task in dask_worker.state.executing] if in_extraction else []


def wait_for_extraction(client: Client, timeout: float) -> tuple[str, str]:
    """(worker address, task key) of a worker caught in the middle of extracting a source video, polled from
    the scheduler's client (a worker still importing or loading models is not there yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for address, keys in cast(dict[str, list[str]], client.run(extracting_keys)).items():
            if keys:
                return address, keys[0]
        time.sleep(0.2)
    raise TimeoutError(f"no worker was extracting within {timeout:.0f} s")


def _env() -> dict[str, str]:
    """The test's environment, with this checkout first on the path: the workers unpickle its flows' tasks."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=log.parent, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen) -> None:
    """End a command's whole process group, a nanny's worker too: SIGTERM, then SIGKILL for what is left of
    the group after the command exited or 20 s passed (an already dead group is no error)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(20)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _logs(root: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(root.glob("*.log")))


@contextmanager
def dask_cluster(root: Path, workers: int, timeout: float = 120) -> Iterator[DaskCluster]:
    """A scheduler and ``workers`` single-threaded workers on 127.0.0.1 (no dashboards), their logs in ``root``;
    every process group is ended on exit, whatever happened."""
    root.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(BIN / "dask")
    with ExitStack() as stack:
        scheduler = _start(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
            root / "scheduler.log",
        )
        stack.callback(_stop, scheduler)  # the scheduler stops last: the workers' callbacks run before it
        machines = {}
        for n in range(workers):
            name = f"machine-{n}"
            cmd = [dask, "worker", address, "--name", name, "--nthreads", "1", "--no-dashboard"]
            cmd += ["--host", "127.0.0.1", "--local-directory", str(root / name), "--death-timeout", "60"]
            machines[name] = Machine(name, _start(cmd, root / f"{name}.log"))
            stack.callback(_stop, machines[name].process)
        try:
            client = stack.enter_context(Client(address, timeout=f"{timeout}s"))
            client.wait_for_workers(workers, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise AssertionError(f"the Dask cluster did not start: {err}\n{_logs(root)}") from None
        yield DaskCluster(address, client, machines)


def computed_key(dask_worker, key: str) -> bool:
    """Runs on a worker: whether its own story shows it executing ``key`` to the end."""
    return any(entry[1:3] == ("executing", "memory") for entry in dask_worker.state.story(key))

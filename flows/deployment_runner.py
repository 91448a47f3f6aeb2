"""``selfmm serve``: a Prefect server on loopback and every deployment of params.yaml, in one process tree.

The server is the one ``PREFECT_API_URL`` names (it must answer), else one already listening on
127.0.0.1:<port> (the local server of flow commands stays up while this runs), else a ``prefect server start``
child with its state in the project's ``.prefect/`` (``PREFECT_HOME``). The deployments are served from this
process: flow runs are its child processes. Ctrl-C or SIGTERM stops the runner, ends flow runs still going, and
stops the server if this command started it; nothing is left behind.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import cast

import psutil
import yaml
from filelock import FileLock
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deployments import build_deployments, served_datasets
from flows.local_server import LocalServerFiles, take_lease
from flows.params import load_params
from flows.prefect_server import GRACE, PrefectAPI, prefect_api
from flows.releases import DatasetPaths


def serve(port: int | None = None) -> None:
    """Serve every deployment until Ctrl-C or SIGTERM; params are checked before anything starts."""
    params = load_params()
    datasets = served_datasets(params)
    deployments = build_deployments(datasets, params.run)
    port = port or params.serve.port
    signal.signal(signal.SIGTERM, _interrupt)  # until the runner installs its own handler
    local = LocalServerFiles.of_this_project()
    with FileLock(local.lock):  # a local server that commands started, if it is the one used, stays up meanwhile
        take_lease(local, params.serve.idle_stop_s)
    try:
        with prefect_api(port) as api, temporary_settings(updates={PREFECT_API_URL: api.url}):
            try:
                absent = [d.name for d in datasets if not DatasetPaths(d.name).data.is_dir()]
                _run(api, deployments, {name: stage_making(f"data/{name}") for name in absent})
            finally:
                _ignore_signals()  # a second Ctrl-C must not cut the clean-up short
                end_children(keep=api.server)
    except (KeyboardInterrupt, TerminationSignal):
        pass  # everything this command started is stopped by now
    print("selfmm serve: stopped", flush=True)


def _run(api: PrefectAPI, deployments: list[RunnerDeployment], without_data: dict[str, str | None]) -> None:
    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        runner.add_deployment(deployment)
    print(banner(api, deployments, without_data), flush=True)
    asyncio.run(runner.start())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def stage_making(out: str, dvc_yaml: Path = Path("dvc.yaml")) -> str | None:
    """The dvc.yaml stage whose outputs include ``out`` (the demo corpus has one; real datasets are fetched)."""
    if not dvc_yaml.is_file():
        return None
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    for name, stage in stages.items():
        if any(o == out or (isinstance(o, dict) and out in o) for o in stage.get("outs", [])):
            return name
    return None


def banner(api: PrefectAPI, deployments: list[RunnerDeployment], without_data: dict[str, str | None]) -> str:
    """What is served, which datasets have no data in data/<d>/ yet (with the dvc stage that makes it, if one
    does), and how to run a deployment."""
    ui = api.url.removesuffix("/api")
    started = "started by this command, stopped with it" if api.server else "already running, left running"
    lines = [f"Prefect API {api.url} ({started}); UI {ui}", f"Serving {len(deployments)} deployments:"]
    names = [f"{d.flow_name}/{d.name}" for d in deployments]
    width = max(map(len, names))
    for name, d in zip(names, deployments):
        crons = [cast(CronSchedule, s.schedule) for s in d.schedules or []]  # build_deployments makes cron ones
        when = "; ".join(f"cron '{c.cron}' ({c.timezone})" for c in crons)
        lines.append(f"  {name:<{width}}  {when}".rstrip())
    if without_data:
        made = "".join(f"; `dvc repro {stage}` makes data/{d}/" for d, stage in without_data.items() if stage)
        lines.append(
            f"No data yet in {', '.join(f'data/{d}/' for d in without_data)}: their runs fail until it is there "
            f"(feature-extract/<d> also takes --param data=DIR; docs/datasets.md{made})"
        )
    example = names[0]
    lines += [
        "Run one from another shell:",
        f"  export PREFECT_API_URL={api.url}",
        f"  prefect deployment run {example} --watch",
        "Ctrl-C stops serving.",
    ]
    return "\n".join(lines)

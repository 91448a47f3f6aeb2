"""Flow commands share one local Prefect server: the first starts it (state in the project's .prefect/) and says so,
the next ones report to the same server, the `prefect` CLI sees their runs, and it stops by itself once no command
needs it: params serve.idle_stop_s after a command, as soon as a `dvc repro` ends, or at `selfmm server stop`."""

import json
import socket
import time

import psutil
import pytest

from flows import local_server
from flows.prefect_server import healthy
from tests.support.data import free_port
from tests.support.projects import BIN, project, sh
from tests.support.serve_command import processes_in, serving

STARTED = "selfmm: started a local Prefect server, UI and API at http://127.0.0.1:{port}"


def extract(dataset, out: str) -> list[str]:
    return [str(BIN / "selfmm"), "extract", "--dataset", str(dataset), "--out", out, "--set", "face.fps=2"]


def gone(root, port: int, within: float) -> bool:
    """Whether every process of the project, the server among them, is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return processes_in(root) == []


@pytest.mark.slow
def test_flow_commands_share_one_local_server_until_it_is_stopped(tmp_path, mosi_dataset):
    port = free_port()
    root = project(tmp_path / "project", serve={"port": port, "idle_stop_s": None})
    first = sh(extract(mosi_dataset, "features.h5"), root)
    assert STARTED.format(port=port) in first.stderr and "it stops with `selfmm server stop`" in first.stderr
    pid = int((root / ".prefect/selfmm-server.pid").read_text())
    second = sh(extract(mosi_dataset, "features.h5"), root)
    assert json.loads(first.stdout)["sources"]["extracted"] == 3 and json.loads(second.stdout)["sources"]["cached"] == 3
    assert int((root / ".prefect/selfmm-server.pid").read_text()) == pid and psutil.pid_exists(pid)
    assert "started a local Prefect server" not in second.stderr  # the first one's, reused
    assert "Stopping temporary server" not in second.stderr  # nor a temporary one per command

    api = f"http://127.0.0.1:{port}/api"
    runs = json.loads(
        sh(["prefect", "flow-run", "ls", "--flow-name", "feature-extract", "-o", "json"], root, api).stdout
    )
    assert [run["state_type"] for run in runs] == ["COMPLETED"] * 2, runs

    assert "stopped" in sh([str(BIN / "selfmm"), "server", "stop"], root).stdout
    assert gone(root, port, within=5)
    assert "none running" in sh([str(BIN / "selfmm"), "server", "stop"], root).stdout


@pytest.mark.slow
def test_the_local_server_stops_by_itself_once_idle_and_the_next_command_starts_another(tmp_path, mosi_dataset):
    port = free_port()
    root = project(tmp_path / "project", serve={"port": port, "idle_stop_s": 3})
    assert "it stops 3 s after the last command" in sh(extract(mosi_dataset, "a.h5"), root).stderr
    assert gone(root, port, within=20)
    assert "no command has used the server" in (root / ".prefect/server.log").read_text()
    again = sh(extract(mosi_dataset, "b.h5"), root)
    assert STARTED.format(port=port) in again.stderr and json.loads(again.stdout)["sources"]["cached"] == 3


@pytest.mark.slow
def test_after_dvc_repro_no_process_is_left(tmp_path, mosi_dataset):
    """The stages of one `dvc repro` share one server, which stops when dvc ends (not idle_stop_s later)."""
    port = free_port()
    root = project(tmp_path / "project", serve={"port": port, "idle_stop_s": 600})
    stage = " ".join(extract(mosi_dataset, "{out}")[1:])
    (root / "dvc.yaml").write_text(
        "stages:\n"
        f"  first:\n    cmd: selfmm {stage.format(out='a.h5')}\n    outs: [a.h5]\n"
        f"  second:\n    cmd: selfmm {stage.format(out='b.h5')}\n    deps: [a.h5]\n    outs: [b.h5]\n"
    )
    repro = sh(["dvc", "repro"], root)
    output = repro.stdout + repro.stderr
    assert output.count("started a local Prefect server") == 1 and "it stops when this dvc run ends" in output
    assert '"cached": 3' in output  # the second stage found the first one's shards: both ran
    assert gone(root, port, within=15)


@pytest.mark.slow
def test_selfmm_serve_keeps_the_local_server_it_uses_until_it_stops(tmp_path, mosi_dataset):
    port = free_port()
    root = project(tmp_path / "project", serve={"port": port, "idle_stop_s": 12})
    sh(extract(mosi_dataset, "a.h5"), root)
    watchdog = int((root / ".prefect/selfmm-server.pid").read_text())
    with serving(root, port):  # it starts within idle_stop_s
        assert "already running, left running" in (root / "serve.log").read_text()
        time.sleep(15)  # past idle_stop_s
        assert psutil.pid_exists(watchdog) and sh(["prefect", "deployment", "ls"], root, f"http://127.0.0.1:{port}/api")
    assert gone(root, port, within=30)  # idle_stop_s after serve ended


@pytest.mark.slow
def test_a_command_loads_its_libraries_while_the_server_it_starts_boots(tmp_path, monkeypatch):
    """``selfmm train`` imports torch and the trainer (seconds) on one core while the server boots on the other."""
    port = free_port()
    home = tmp_path / ".prefect"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setattr(local_server, "configured_api", lambda: None)  # an earlier test's server may be configured
    url = f"http://127.0.0.1:{port}/api"
    answered_before: list[bool] = []
    try:
        assert local_server.local_api(port, idle_stop=1, meanwhile=lambda: answered_before.append(healthy(url))) == url
        assert answered_before == [False] and healthy(url)  # ran while the server booted; returned once it answered
    finally:
        assert local_server.stop_local_server(home)

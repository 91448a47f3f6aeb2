"""Flow commands share one local Prefect server: the first starts it (state in the project's .prefect/), the next
ones report to the same server, the `prefect` CLI sees their runs, and `selfmm server stop` ends it."""

import json
import socket

import psutil
import pytest

from tests.support.data import free_port
from tests.support.projects import BIN, project, sh


@pytest.mark.slow
def test_flow_commands_share_one_local_server_until_it_is_stopped(tmp_path, mosi_dataset):
    port = free_port()
    root = project(tmp_path / "project", serve={"port": port})
    extract = [str(BIN / "selfmm"), "extract", "--dataset", str(mosi_dataset), "--out", "features.h5"]
    first = json.loads(sh(extract, root).stdout)
    pid = int((root / ".prefect/selfmm-server.pid").read_text())
    second = json.loads(sh(extract, root).stdout)
    assert first["sources"]["extracted"] == 3 and second["sources"]["cached"] == 3
    assert int((root / ".prefect/selfmm-server.pid").read_text()) == pid and psutil.pid_exists(pid)
    assert "Stopping temporary server" not in sh(extract, root).stderr  # nor a temporary one per command

    api = f"http://127.0.0.1:{port}/api"
    runs = json.loads(
        sh(["prefect", "flow-run", "ls", "--flow-name", "feature-extract", "-o", "json"], root, api).stdout
    )
    assert [run["state_type"] for run in runs] == ["COMPLETED"] * 3, runs

    assert "stopped" in sh([str(BIN / "selfmm"), "server", "stop"], root).stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert "none running" in sh([str(BIN / "selfmm"), "server", "stop"], root).stdout

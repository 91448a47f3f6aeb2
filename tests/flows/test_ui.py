"""The Prefect UI of `selfmm serve` on a non-default port, in a real headless Chromium: the page must reach the
API of the server that serves it (not the default port's) and list a flow run made through that server."""

import json
import re
import subprocess
import urllib.request

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.support.browser import CHROMIUM, NO_CHROMIUM
from tests.support.data import free_port
from tests.support.projects import project, sh
from tests.support.serve_command import finished, flow_run_id, serving

NO_SERVER = "Unable to connect to Prefect server"  # what the UI shows when its API url is wrong


def page_text(url: str) -> str:
    """The visible text of ``url`` after the page's scripts ran for 15 s of virtual time."""
    dom = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server"]
        + ["--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", text)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_ui_on_a_non_default_port_lists_the_flow_runs_of_its_server(tmp_path):
    root = project(tmp_path / "project")  # no data/demo/: the run fails fast, and is still a run to list
    port = free_port()
    with serving(root, port) as api:
        run_id = flow_run_id(sh(["prefect", "deployment", "run", "feature-extract/demo"], root, api).stdout)
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            run = finished(client, run_id)
        base = api.removesuffix("/api")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{base}/ui-settings") as response:
            settings = json.load(response)
        assert settings["api_url"] == api
        ui = settings[f"{settings['default_ui']}_base_url"].rstrip("/")
        text = page_text(f"{base}{ui}/runs")
    assert NO_SERVER not in text
    assert f"feature-extract / {run.name}" in text, text[:2000]

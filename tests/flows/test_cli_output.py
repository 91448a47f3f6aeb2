"""What the CLI prints without a terminal: no third-party chatter unless --verbose, no progress bars, and one
line per training epoch, in the command's output and in the flow run's logs on the server."""

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.projects import BIN, project, sh

CHATTER = ("XNNPACK", "absl::InitializeLog", "W0000")
EPOCH = re.compile(r"seed 1111 epoch (\d+): train loss \d+\.\d{4}, valid L1 \d+\.\d{4}, \d+\.\d s")


@pytest.mark.slow
def test_quiet_by_default_verbose_on_request_and_one_line_per_epoch(tmp_path, mosi_dataset):
    root = project(tmp_path / "project")
    extract = [str(BIN / "selfmm"), "extract", "--dataset", str(mosi_dataset), "--out", "features.h5"]
    # The face models run on LiteRT's built-in kernels, outside MediaPipe's graph: neither an XNNPACK note nor
    # absl's log records, with or without --verbose.
    for flags in ([], ["--verbose"]):
        stderr = sh([str(BIN / "selfmm"), *flags, *extract[1:], "--cache-dir", f"cache{len(flags)}"], root).stderr
        assert "Finished in state Completed()" in stderr and not [c for c in CHATTER if c in stderr], stderr

    train = [str(BIN / "selfmm"), "train", "--features", "features.h5", "--out", "model"]
    done = sh([*train, "--set", "max_epochs=2", "--set", "early_stop=5"], root)
    assert [int(e) for e in EPOCH.findall(done.stderr)] == [1, 2], done.stderr
    assert "batch/s" not in done.stderr and "it/s" not in done.stderr  # no bar without a TTY

    runs = sh(["prefect", "flow-run", "ls", "--flow-name", "train", "-o", "json"], root, api_of(root)).stdout
    (run,) = json.loads(runs)
    logs = sh(["prefect", "flow-run", "logs", run["id"]], root, api_of(root)).stdout
    assert [int(e) for e in EPOCH.findall(logs)] == [1, 2], logs


def api_of(root: Path) -> str:
    """The local server the project's flow commands share (params serve.port)."""
    return f"http://127.0.0.1:{yaml.safe_load((root / 'params.yaml').read_text())['serve']['port']}/api"

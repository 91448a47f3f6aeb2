"""Temporary git+DVC projects that hold this repo's pipeline, and commands run in them with the real tools."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from test_pipeline import make_project

BIN = Path(sys.executable).parent


def project(root: Path, **sections: dict) -> Path:
    """A project as tests/test_pipeline.py makes it, with params sections merged key by key."""
    root = make_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for name, values in sections.items():
        params[name] = {**(params.get(name) or {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def env(root: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a user in ``root``: the venv's tools on PATH, Prefect state in ``root/.prefect``."""
    out = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(root / ".prefect"),
           "DVC_NO_ANALYTICS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    out.pop("PREFECT_API_URL", None)
    if api_url:
        out["PREFECT_API_URL"] = api_url
    return out


def sh(cmd: list[str], root: Path, api_url: str | None = None, check: bool = True,
       timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=root, env=env(root, api_url), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done

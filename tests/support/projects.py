"""Temporary git+DVC projects that hold this repo's pipeline, and commands run in them with the real tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.data import REPO, free_port

BIN = Path(sys.executable).parent
PROJECT_FILES = ["dvc.yaml", "features", "selfmm", "flows"]
SMALL = {
    "demo": {"clips": 30, "seed": 3},
    "train": {"preset": "demo", "seeds": [1111], "max_epochs": 2, "device": "cpu"},
}


def make_project(root: Path) -> Path:
    """A fresh git+DVC project holding this repo's pipeline, with small params."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(SMALL)
    params["serve"]["port"] = free_port()  # of the local server its flow commands share, never another's
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, root)
    return root


def project(root: Path, **sections: dict) -> Path:
    """A project as make_project makes it, with params sections merged key by key."""
    root = make_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for name, values in sections.items():
        params[name] = {**(params.get(name) or {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def env(root: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a user in ``root``: the venv's tools on PATH, Prefect state in ``root/.prefect``."""
    out = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(root / ".prefect"),
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    out.pop("PREFECT_API_URL", None)
    if api_url:
        out["PREFECT_API_URL"] = api_url
    return out


def sh(
    cmd: list[str], root: Path, api_url: str | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=root, env=env(root, api_url), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def run(cmd: list[str], cwd: Path, stdout_only: bool = False) -> str:
    """Run a tool in a project (no Prefect API: its flow commands share the project's local server, which the
    test's clean-up stops); fail the test on an error."""
    done = sh(cmd, cwd, timeout=900)
    return done.stdout if stdout_only else done.stdout + done.stderr

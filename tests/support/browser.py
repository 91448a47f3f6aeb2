"""Headless Chromium for tests that need a real browser: the page as the browser built it, and the network
requests the page itself made (from Chromium's NetLog: the browser's own update and sync traffic is left out)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium: not installed (setup.sh installs it with apt where it can)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-extensions"]
FLAGS += ["--host-resolver-rules=MAP * ~NOTFOUND"]  # a request the page makes fails at once, never waits


def chromium(args: list[str], profile: Path) -> str:
    """Run headless Chromium with its own profile folder; its stdout."""
    return subprocess.run(
        [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout


def render(url: str, work: Path) -> tuple[str, list[str]]:
    """The DOM of ``url`` after its scripts ran for 5 s of virtual time, and the URLs of the network requests
    the page made (a request the browser makes for itself has no initiator)."""
    netlog = work / "netlog.json"
    dom = chromium(["--virtual-time-budget=5000", f"--log-net-log={netlog}", "--dump-dom", url], work / "profile")
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and e.get("params", {}).get("initiator", "not an origin") != "not an origin"
    ]
    return dom, requests


def screenshot(url: str, target: Path, work: Path, size: tuple[int, int] = (1280, 4000)) -> Path:
    """A PNG of the page as Chromium drew it, ``size`` pixels."""
    target.parent.mkdir(parents=True, exist_ok=True)
    chromium(
        ["--virtual-time-budget=5000", f"--window-size={size[0]},{size[1]}", f"--screenshot={target}", url],
        work / "profile-shot",
    )
    return target

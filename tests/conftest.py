"""Shared fixtures (real MOSI clips as a small dataset, a real Prefect server, one torch thread) and the
``shared_data`` marker: tests that read ../shared/data skip, saying what is missing, where it is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from features import portable_math
from flows.settings import PROJECT
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA, SHARED, add_clip, free_port, write_label_csv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # else importing py-feat pins torch to 1 thread
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

SHARED_FIXTURES = {"mosi_dataset", "real_models", "long_mosi_video"}


def pytest_configure(config: pytest.Config) -> None:
    """The session runs with the portable float maths, as ``selfmm`` does: a restart of the same command, with
    pytest's output capture handed back first so the new process writes to the terminal."""
    capture = config.pluginmanager.getplugin("capturemanager")  # pytest's own plugin, typed as any plugin
    portable_math.reexec(before=getattr(capture, "stop_global_capturing", None))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a fixture built from ../shared needs the real data too."""
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") and not (MOSI_MEDIA.is_dir() and (SHARED / "mosei").is_dir()):
        pytest.skip(
            f"shared_data: the real MOSI/MOSEI files are not at {SHARED} (../shared/data beside the "
            "repository); this test needs them"
        )


@pytest.fixture
def mosi_dataset(tmp_path: Path) -> Path:
    """An MMSA-layout folder with the three real MOSI video clips."""
    root = tmp_path / "mosi_small"
    rows = []
    for (name, (text, label)), mode in zip(MOSI_CLIPS.items(), ["train", "valid", "test"]):
        video_id, clip_id = name.rsplit("_", 1)
        rows.append(add_clip(root, video_id, clip_id, MOSI_MEDIA / f"{name}.mp4", text, label, mode))
    write_label_csv(root, rows)
    return root


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server on a free loopback port for the whole session (started and stopped by the
    production code of `selfmm serve`); flows called in this process report to it, and so do their DVC stages."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_server import prefect_server as start_server

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    with start_server(tmp_path_factory.mktemp("prefect-home"), port), temporary_settings({PREFECT_API_URL: url}):
        yield url


@pytest.fixture(autouse=True)
def project_of_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's project is its working directory, as for a command (``selfmm`` sets SELFMM_PROJECT to it),
    whatever an earlier in-process ``main()`` left in the environment."""
    monkeypatch.setenv(PROJECT, "")


@pytest.fixture(autouse=True)
def stop_local_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Flow commands in a test's projects leave their shared local Prefect server running: stop it with the test."""
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is not None:
        from flows.local_server import stop_local_server

        for pid_file in tmp_path.glob("**/.prefect/selfmm-server.pid"):
            stop_local_server(pid_file.parent)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread, and shared CI cores stay predictable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_models(tmp_path_factory):
    """Two tiny bundles trained on features extracted here from three real MOSI clips and five synthetic talking
    faces: they accept what the extractors make from raw media (batch prediction, the model service)."""
    from tests.support.model_service import make_real_models

    return make_real_models(tmp_path_factory.mktemp("real-models"))


@pytest.fixture(scope="session")
def long_mosi_video(tmp_path_factory):
    """The real MOSI clips end to end in one lossless video with an SRT of their transcripts, and each alone."""
    from tests.support.data import MOSI_CLIPS, MOSI_MEDIA
    from tests.support.long_video import make_long_video

    clips = {name: (MOSI_MEDIA / f"{name}.mp4", text) for name, (text, _) in MOSI_CLIPS.items()}
    return make_long_video(tmp_path_factory.mktemp("long-video"), clips)

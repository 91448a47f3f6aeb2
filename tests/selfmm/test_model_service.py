"""The model service, run for real (uvicorn on a free loopback port) and asked with real HTTP clients: real clips
are predicted, each kind of bad input gets its 4xx error while the service stays up, a promotion or rollback
switches the release served, load beyond the limits waits or gets 503, and uploads never outlive their request."""

import http.client
import json
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import pytest

from flows.releases import DatasetPaths, promote, rollback
from selfmm.batch import SCORE_NAMES
from selfmm.bundle import load_bundle
from selfmm.model_service import ServiceSettings, create_app
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA, flip_a_byte
from tests.support.model_service import running, talking_face

SETTINGS = ServiceSettings(max_upload_bytes=2 * 2**20, max_concurrent=2, max_waiting=16)


def champion(root: Path, *bundles: Path) -> DatasetPaths:
    """models/demo/ under ``root`` (the cwd) with each bundle promoted in turn; the last is the champion."""
    paths = DatasetPaths("demo")
    for i, bundle in enumerate(bundles):
        shutil.rmtree(paths.model, ignore_errors=True)
        shutil.copytree(bundle, paths.model)
        record = {"time": f"t{i}", "challenger": {"valid": {"MAE": 1.0 - i / 10}, "test": {"MAE": 1.0}}}
        promote(paths, record)
    return paths


@pytest.fixture
def service(real_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = champion(tmp_path, real_models.first)
    app = create_app(paths.champion, SETTINGS, temp_root=tmp_path)
    with running(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, app, paths
    assert not app.state.uploads.exists()  # the private upload folder goes with the service


def wait_until(condition: Callable[[], bool], tries: int = 600) -> None:
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the service never got there")


def post(client: httpx.Client, media: Path | bytes, name: str = "clip.mp4", text: str | None = None) -> httpx.Response:
    content = media if isinstance(media, bytes) else media.read_bytes()
    return client.post("/predict", files={"file": (name, content)}, data={"text": text} if text is not None else None)


def test_real_clips_are_predicted_with_the_release_and_feature_hash(service, real_models):
    client, app, paths = service
    release = paths.champion.resolve().name
    feature_hash = load_bundle(real_models.first).info["feature_config_hash"]
    for name, (text, _) in MOSI_CLIPS.items():
        answer = post(client, MOSI_MEDIA / f"{name}.mp4", f"{name}.mp4", text)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert all(math.isfinite(body[k]) for k in SCORE_NAMES.values())
        assert 0 < body["face_frames"] <= body["frames"]  # real faces, sampled at the bundle's 5 frames/s
        assert body["release"] == release and body["feature_config_hash"] == feature_hash
        assert body["text_truncated"] is False and body["warnings"] == []
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["release"] == release and health["reload_error"] is None
    described = client.get("/model").json()
    assert described["release"] == release and described["metrics"]["valid"] == {"MAE": 1.0}
    assert described["provenance"]["vision"]["config"]["fps"] == 5.0
    assert list(app.state.uploads.iterdir()) == []


def test_each_bad_input_gets_a_4xx_error_naming_the_problem_and_the_service_stays_up(service, real_models, tmp_path):
    client, app, _ = service
    silent = talking_face(tmp_path / "silent.mp4", audio=False)
    with av.open(str(silent)) as container:
        assert container.streams.video and not container.streams.audio
    whole = real_models.short_clip.read_bytes()
    cases = [
        (b"just some words, not a video", "notes.mp4", 422, "notes.mp4: not a usable media file"),
        (whole[: len(whole) // 2], "cut.mp4", 422, "cut.mp4: not a usable media file"),
        (silent.read_bytes(), "silent.mp4", 422, "no audio stream"),
        (b"", "empty.mp4", 400, "empty upload: 'empty.mp4' has no bytes"),
        (b"x" * (3 * 2**20), "big.mp4", 413, "over the size limit of 2 MB"),
        (whole, "../../etc/passwd", 400, "looks like a path"),
        (whole, "C:\\clips\\a.mp4", 400, "looks like a path"),
    ]
    for content, name, status, message in cases:
        answer = post(client, content, name)
        assert answer.status_code == status, (name, answer.text)
        assert message in answer.json()["error"], (name, answer.json())
    answer = client.post("/predict", json={"file": "clip.mp4"})
    assert answer.status_code == 415 and "multipart/form-data" in answer.json()["error"]
    answer = client.post("/predict", data={"text": "no file"}, files={"other": ("a.txt", b"x")})
    assert answer.status_code == 400 and "no 'file' part" in answer.json()["error"]

    long_text = " ".join(["good"] * 200)  # 202 tokens for a 50-token tokenizer
    answer = post(client, real_models.short_clip, text=long_text)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text_truncated"] is True and answer.json()["text_tokens"] == 202
    assert "truncated from 202 to the tokenizer's limit of 50 tokens" in answer.json()["warnings"][0]

    assert post(client, real_models.short_clip).status_code == 200  # still up, and still right
    assert list(app.state.uploads.iterdir()) == []  # every upload removed, refused or not


def test_an_oversized_upload_is_refused_while_it_streams(service):
    """The client sends more than the limit and then nothing: a server that waited for the whole body first
    would never answer."""
    client, app, _ = service
    conn = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=60)
    boundary = "b0undary"
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.mp4"\r\n\r\n'.encode()
    for block in [head] + [b"\0" * 2**18] * 10:  # 2.5 MB of a body that never ends
        conn.send(b"%x\r\n%s\r\n" % (len(block), block))
    answer = conn.getresponse()
    assert answer.status == 413 and "over the size limit" in json.loads(answer.read())["error"]
    conn.close()
    assert client.get("/health").status_code == 200


def test_a_promotion_or_rollback_while_serving_switches_the_release_and_a_half_copied_one_is_never_served(
    service, real_models
):
    client, _, paths = service
    first = paths.champion.resolve().name
    assert post(client, real_models.short_clip).json()["release"] == first
    promote_second = champion(Path.cwd(), real_models.second)
    second = promote_second.champion.resolve().name
    answer = post(client, real_models.short_clip).json()
    assert answer["release"] == second != first
    assert client.get("/model").json()["selected_seed"] == 2
    rollback("demo", to=first)
    assert post(client, real_models.short_clip).json()["release"] == first

    # A release folder still being copied (no bundle.json yet) that the link names: the last good one serves on.
    half = paths.releases / "20990101T000000000000Z"
    shutil.copytree(real_models.second / "weights", half / "weights")
    paths.champion.unlink()
    paths.champion.symlink_to(Path("releases") / half.name)
    assert post(client, real_models.short_clip).json()["release"] == first
    health = client.get("/health").json()
    assert health["release"] == first and "not a model bundle" in health["reload_error"]


def test_a_release_whose_files_fail_the_manifest_is_not_served_and_health_names_the_file(service, real_models):
    client, _, paths = service
    first = paths.champion.resolve().name
    damaged = paths.releases / "20990101T000000000000Z"
    shutil.copytree(real_models.second, damaged)
    flip_a_byte(damaged / "weights" / "seed_2.safetensors")
    paths.champion.unlink()
    paths.champion.symlink_to(Path("releases") / damaged.name)
    for _ in range(2):  # refused again on each request, the last good release serving
        answer = post(client, real_models.short_clip)
        assert answer.status_code == 200 and answer.json()["release"] == first
    health = client.get("/health").json()
    assert health["release"] == first and health["verified"] is True
    assert "weights/seed_2.safetensors: content differs from the manifest" in health["reload_error"]
    assert str(damaged) in health["reload_error"]

    shutil.rmtree(damaged)
    shutil.copytree(real_models.second, damaged)  # copied again, whole: served from the next request
    assert post(client, real_models.short_clip).json()["release"] == damaged.name
    assert client.get("/health").json()["reload_error"] is None


def test_fifty_requests_eight_at_a_time_all_succeed(service, real_models):
    client, _, _ = service
    content = real_models.short_clip.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(client, content, f"clip{i}.mp4"), range(50)))
    assert [a.status_code for a in answers] == [200] * 50
    assert len({a.json()["sentiment"] for a in answers}) == 1  # the same clip, the same score, whatever the load


def test_beyond_the_running_and_waiting_limits_a_request_gets_503_with_retry_after(real_models, tmp_path):
    app = create_app(real_models.first, ServiceSettings(max_concurrent=1, max_waiting=0), temp_root=tmp_path)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        slow = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=60)
        slow.putrequest("POST", "/predict")
        slow.putheader("Content-Type", "multipart/form-data; boundary=b")
        slow.putheader("Content-Length", "100000")
        slow.endheaders()
        slow.send(b"--b\r\n")  # admitted, and uploading slowly
        wait_until(lambda: client.get("/health").json()["admitted"] == 1)
        answer = post(client, real_models.short_clip)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
        assert "busy" in answer.json()["error"]
        slow.close()
        wait_until(lambda: client.get("/health").json()["admitted"] == 0)
        assert post(client, real_models.short_clip).json()["release"] is None  # a plain bundle: no release id


def test_a_plain_bundle_is_served_with_its_validation_loss_as_metrics(real_models, tmp_path):
    app = create_app(real_models.first, SETTINGS, temp_root=tmp_path)
    with running(app) as url:
        described = httpx.get(f"{url}/model").json()
    assert described["release"] is None and set(described["metrics"]["valid_loss"]) == {"1"}

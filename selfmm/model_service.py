"""``selfmm serve-model``: an HTTP service (FastAPI on uvicorn) that answers predictions with a champion.

    GET  /          a page (selfmm/model_page.html) that uploads a clip and shows its scores or timeline
    POST /predict   multipart: ``file`` (the media) and optional ``text`` (the transcript) -> JSON scores; with a
                    ``subtitles`` file (SRT or WebVTT) -> one prediction per cue
    GET  /docs      this API, from the OpenAPI schema at /openapi.json (offline: no Swagger UI from a CDN)
    GET  /health    up, which release, whether its files verified, why a newer one is not served, how busy
    GET  /model     the model card (what it was trained on), provenance, metrics and release of the served model

It follows the champion: ``--model models/<d>/champion`` is a link that a promotion or a rollback swaps in one
rename (flows/releases.py); each request resolves it, and a new target is loaded once and served from then on. A
target that cannot be loaded (a release still being copied, a bundle whose files fail its manifest) is not served:
the previous model goes on, and /health says why (the file and the problem). Uploads stream into a private temporary
folder (removed after each request), counted as they arrive (selfmm/uploads.py), so one over the size limit is
refused before it is stored; a bounded pool runs the predictions and a bounded queue waits for it, the rest get 503
with Retry-After. Bad input is a 4xx JSON error ``{"error": "..."}`` naming the problem; no request can stop the
service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from transformers import AutoTokenizer

from features.cache import ShardCache
from features.config import ExtractConfig
from features.errors import PipelineError
from features.extract import extract_file
from features.files import TEMP_MARK
from features.media import MediaError, media_duration
from selfmm.batch import SCORE_NAMES, TextSource, extraction_config
from selfmm.bundle import Bundle, load_bundle
from selfmm.model_page import PAGE, PREDICT_BODY, api_reference
from selfmm.predict import Predictor
from selfmm.timeline import SubtitleError, timeline_of
from selfmm.uploads import ServiceError, Upload, read_upload

log = logging.getLogger("selfmm.model_service")

RETRY_AFTER = 2  # seconds, the hint a 503 gives


@dataclass(frozen=True)
class ServiceSettings:
    """The service's limits (params ``serve.model``)."""

    max_upload_bytes: int = 200 * 2**20
    max_concurrent: int = 2  # predictions at once
    max_waiting: int = 16  # requests admitted beyond those, waiting
    max_video_s: float = 300.0  # a longer video is refused (413): one request decodes it whole
    min_segment_s: float = 2.0  # subtitle cues shorter than this are joined with their neighbours (params predict)


@dataclass
class LoadedModel:
    """One release, loaded once: the network, the extraction settings it needs and its tokenizer."""

    path: Path  # the resolved folder
    bundle: Bundle
    predictor: Predictor
    config: ExtractConfig
    tokenizer: Any  # the bundle's tokenizer: counts a transcript's tokens before truncation

    @property
    def release(self) -> str | None:
        """``<id>`` of ``models/<d>/releases/<id>``; None for a bundle outside a release folder."""
        return self.path.name if self.path.parent.name == "releases" else None

    @classmethod
    def load(cls, path: Path) -> LoadedModel:
        if TEMP_MARK in path.name:
            raise ServiceError(503, f"{path}: a release still being written")
        bundle = load_bundle(path)
        tokenizer = AutoTokenizer.from_pretrained(bundle.text_model_dir, local_files_only=True)
        return cls(path, bundle, Predictor(bundle), extraction_config(bundle), tokenizer)


class ModelFollower:
    """The model ``link`` points to now (a champion link, or a bundle folder), loaded once per target."""

    def __init__(self, link: Path):
        self.link = link
        self.current = LoadedModel.load(link.resolve())
        self.reload_error: str | None = None  # why the target the link names now is not the one served
        self._lock = threading.Lock()

    def get(self) -> LoadedModel:
        target = self.link.resolve()
        if target == self.current.path:
            return self.current
        with self._lock:  # one load per switch; requests meanwhile wait for it
            if target != self.current.path:
                try:
                    self.current = LoadedModel.load(target)
                    self.reload_error = None
                    log.info("now serving %s (release %s)", target, self.current.release)
                except Exception as err:  # noqa: BLE001 - whatever a half-written release raises, the old one serves
                    self.reload_error = f"{target}: {type(err).__name__}: {err}"
                    log.warning("still serving %s: cannot load %s", self.current.path, self.reload_error)
        return self.current


class Gate:
    """At most ``running`` predictions at once (a pool of that many threads, each with its own extractors) and
    ``waiting`` more admitted; beyond that a request is refused at once with 503 and Retry-After."""

    def __init__(self, running: int, waiting: int):
        self.executor = ThreadPoolExecutor(running, thread_name_prefix="selfmm-predict")
        self.capacity = running + waiting
        self.admitted = 0  # only touched on the event loop's thread

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.admitted >= self.capacity:
            raise ServiceError(
                503,
                f"busy: {self.admitted} predictions running or waiting (limit {self.capacity}); retry later",
                {"Retry-After": str(RETRY_AFTER)},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self.executor.submit(fn, *args))


def predict_upload(follower: ModelFollower, upload: Upload, settings: ServiceSettings) -> dict:
    """The scores of one uploaded clip by the current model, or its timeline when subtitles came with it (runs on
    a pool thread)."""
    model = follower.get()
    try:
        text = upload.text.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ServiceError(400, "the 'text' part is not UTF-8") from None
    assert upload.media is not None  # read_upload refuses a body without one
    try:
        duration = media_duration(upload.media)
        if duration > settings.max_video_s:
            raise ServiceError(
                413,
                f"{upload.filename}: {duration:.1f} s of media, over the limit of {settings.max_video_s:g} s for one "
                "request (params serve.model.max_video_s): score it with `selfmm predict FILE [--subtitles SRT]` or "
                "the predict/<dataset> deployment",
            )
        if upload.subtitles_name:
            return predict_timeline_upload(model, upload, settings)
        clip = extract_file(upload.media, text, model.config)
        scores = model.predictor.predict([clip])[clip.key]
    except SubtitleError as err:
        raise ServiceError(400, f"{upload.subtitles_name}: {str(err).split(': ', 1)[-1]}") from None
    except PipelineError as err:  # MediaError (not media, corrupt, no audio), DataError (unusable features)
        if isinstance(err, ServiceError):
            raise
        what = "not a usable media file" if isinstance(err, MediaError) else "cannot be scored"
        raise ServiceError(422, f"{upload.filename}: {what}: {str(err).replace(str(upload.media), '')}") from None
    tokens = len(model.tokenizer(text)["input_ids"])
    limit = model.config.text.max_length
    warnings = []
    if tokens > limit:
        warnings.append(f"transcript truncated from {tokens} to the tokenizer's limit of {limit} tokens")
    if not text:
        warnings.append("no transcript (an empty 'text' part or none): text_sentiment is the score of empty text")
    caution = model.bundle.card.caution_for([clip.media_sha256])
    return {
        "file": upload.filename,
        **{name: scores[task] for task, name in SCORE_NAMES.items()},
        "text_source": TextSource.ARGUMENT if text else TextSource.NONE,
        "face_frames": int(clip.face_mask.sum()),
        "frames": len(clip.face_mask),
        "text_tokens": tokens,
        "text_truncated": tokens > limit,
        "warnings": warnings + ([caution] if caution else []),
        "caution": caution,
        "release": model.release,
        "feature_config_hash": model.bundle.info["feature_config_hash"],
    }


def predict_timeline_upload(model: LoadedModel, upload: Upload, settings: ServiceSettings) -> dict:
    """One prediction per subtitle cue of the uploaded media, through a shard cache private to the request."""
    assert upload.media is not None
    subtitles = upload.folder / f"subtitles{Path(upload.subtitles_name).suffix.lower()}"
    subtitles.write_bytes(bytes(upload.subtitles))
    segments, caution = timeline_of(
        model.predictor,
        upload.media,
        subtitles,
        settings.min_segment_s,
        model.config,
        ShardCache(upload.folder / "cache"),
    )
    return {
        "file": upload.filename,
        "subtitles": upload.subtitles_name,
        "segments": [
            {
                "start": s.start,
                "end": s.end,
                "text": s.text,
                **{name: None if math.isnan(v := getattr(s, name)) else v for name in SCORE_NAMES.values()},
                "face_frames": s.face_frames,
                "error": s.error,
            }
            for s in segments
        ],
        "warnings": [caution] if caution else [],
        "caution": caution,
        "release": model.release,
        "feature_config_hash": model.bundle.info["feature_config_hash"],
    }


def describe(model: LoadedModel, link: Path) -> dict:
    """GET /model: what is served, where it came from (provenance), how good it was found (metrics)."""
    record_file = model.path / "champion.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    metrics = (
        {"valid": record["challenger"]["valid"], "test": record["challenger"]["test"], "promoted": record["time"]}
        if record
        else {"valid_loss": model.bundle.info["valid_loss"]}
    )
    return {
        **model.bundle.summary(),
        "model": str(link),
        "release": model.release,
        "metrics": metrics,
        "promotion": record,
    }


def create_app(model: str | Path, settings: ServiceSettings, temp_root: str | Path | None = None) -> FastAPI:
    """The service for ``model`` (loaded now, once). Uploads go to a private folder made under ``temp_root``
    (default: the system's), removed when the service stops."""
    link = Path(model)
    follower = ModelFollower(link)
    gate = Gate(settings.max_concurrent, settings.max_waiting)
    uploads = Path(tempfile.mkdtemp(prefix="selfmm-uploads-", dir=temp_root))  # mode 0700: this user only

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.executor.shutdown(wait=True)
        shutil.rmtree(uploads, ignore_errors=True)

    # no Swagger UI: FastAPI's loads its scripts from a CDN, and the service must work offline. /docs is a page of
    # our own drawn from the same OpenAPI schema (/openapi.json).
    app = FastAPI(
        title="selfmm model service",
        summary="Self-MM sentiment of uploaded clips, and timelines of subtitled videos",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.uploads = uploads
    app.state.follower = follower

    @app.exception_handler(ServiceError)
    async def refused(request: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status, headers=err.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, summary="the page: upload a clip, see its scores and timeline")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/docs", response_class=HTMLResponse, summary="this API, drawn from /openapi.json")
    async def docs() -> HTMLResponse:
        return HTMLResponse(api_reference(app.openapi()))

    @app.post("/predict", summary="scores of one clip, or its timeline with subtitles", openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> dict:
        with gate.admit():
            folder = Path(tempfile.mkdtemp(dir=uploads))
            try:
                upload = await read_upload(request, folder, settings.max_upload_bytes)
                return await gate.run(predict_upload, follower, upload, settings)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    @app.get("/health", summary="up, which release, why a newer one is not served, how busy")
    async def health() -> dict:
        model = await asyncio.to_thread(follower.get)  # a switch loads the new release off the event loop
        return {
            "status": "ok",
            "release": model.release,
            "path": str(model.path),
            "reload_error": follower.reload_error,
            "verified": model.bundle.verified,
            "admitted": gate.admitted,
            "capacity": gate.capacity,
        }

    @app.get("/model", summary="the model card, provenance, metrics and release of the served model")
    async def model_info() -> dict:
        return describe(await asyncio.to_thread(follower.get), link)

    return app


def serve_model(model: str | Path, settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service until Ctrl-C or SIGTERM."""
    import uvicorn

    app = create_app(model, settings)
    print(
        f"selfmm serve-model: {model} (release {app.state.follower.current.release}) on http://{host}:{port}; "
        f"POST /predict, GET /health, GET /model",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()

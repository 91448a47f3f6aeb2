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
folder (removed after each request), counted as they arrive, so one over the size limit is refused before it is
stored; a bounded pool runs the predictions and a bounded queue waits for it, the rest get 503 with Retry-After. Bad
input is a 4xx JSON error ``{"error": "..."}`` naming the problem; no request can stop the service.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect
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
from selfmm.timeline import SUBTITLE_SUFFIXES, SubtitleError, merge_short_cues, predict_timeline, read_subtitles

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict defined for type checkers only

log = logging.getLogger("selfmm.model_service")

MAX_TEXT_BYTES = 64 * 1024  # a transcript part longer than this is refused (the tokenizer keeps far less)
MAX_SUBTITLE_BYTES = 2 * 2**20  # a subtitles part longer than this is refused (hours of cues)
DRAIN_BYTES = 4 * 2**20  # after refusing an upload, read at most this much more of it so the client sees the answer
DRAIN_IDLE = 1.0  # seconds of silence that end that reading
RETRY_AFTER = 2  # seconds, the hint a 503 gives


class ServiceError(PipelineError):
    """A request the service refuses: the HTTP status and the message the JSON error carries."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


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


def check_filename(name: str) -> str:
    """An upload's name is a plain file name; one with folders, drive letters or '..' is refused."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or name.startswith("~") or name[1:2] == ":":
        raise ServiceError(400, f"filename {name!r} looks like a path: send a plain file name")
    return name


@dataclass
class Upload:
    """The parts of one multipart body as they stream in: ``file`` to disk in ``folder``, ``text`` and
    ``subtitles`` in memory."""

    folder: Path
    media: Path | None = None
    filename: str = ""
    size: int = 0
    text: bytearray = field(default_factory=bytearray)
    subtitles: bytearray = field(default_factory=bytearray)
    subtitles_name: str = ""
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _header: bytes = b""
    _part: str | None = None  # "file", "text", or None (a part that is ignored)
    _file: Any = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._value,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._header, self._part = {}, b"", None

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header = data[start:end].lower()

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header] = self._headers.get(self._header, b"") + data[start:end]

    def _headers_done(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.media is not None:
                raise ServiceError(400, "more than one 'file' part: send one media file per request")
            filename = options.get(b"filename", b"upload").decode("utf-8", "replace")
            if b"\\" in disposition:  # the parser keeps only the last part of a Windows path: look at the raw one
                filename = disposition.decode("utf-8", "replace").split("filename=", 1)[-1].strip('"')
            self.filename = check_filename(filename)
            self.media = self.folder / "upload"  # never the client's name: it only appears in messages
            self._file = open(self.media, "wb")  # noqa: SIM115 - closed at the part's end or in close()
            self._part = "file"
        elif name == "text":
            self._part = "text"
        elif name == "subtitles":
            if self.subtitles_name:
                raise ServiceError(400, "more than one 'subtitles' part: send one subtitles file per request")
            self.subtitles_name = check_filename(options.get(b"filename", b"subtitles").decode("utf-8", "replace"))
            if Path(self.subtitles_name).suffix.lower() not in SUBTITLE_SUFFIXES:
                raise ServiceError(400, f"subtitles {self.subtitles_name!r}: expected an .srt or .vtt file")
            self._part = "subtitles"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self._file.write(data[start:end])
            self.size += end - start
        elif self._part == "text":
            self.text += data[start:end]
            if len(self.text) > MAX_TEXT_BYTES:
                raise ServiceError(413, f"transcript over {MAX_TEXT_BYTES} bytes")
        elif self._part == "subtitles":
            self.subtitles += data[start:end]
            if len(self.subtitles) > MAX_SUBTITLE_BYTES:
                raise ServiceError(413, f"subtitles over {MAX_SUBTITLE_BYTES // 2**20} MB")

    def _end(self) -> None:
        self.close()
        self._part = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_upload(request: Request, folder: Path, limit: int) -> Upload:
    """Stream the multipart body into ``folder``, counting it: past ``limit`` bytes it is refused (413) at once,
    not after it has all arrived. Missing, empty or malformed parts are 400, another content type 415."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise ServiceError(
            415,
            "expected a multipart/form-data upload: a 'file' part (the media), and an optional 'text' part or "
            "'subtitles' file",
        )
    upload = Upload(folder)
    stream = request.stream()
    too_large = ServiceError(413, f"upload over the size limit of {limit / 2**20:g} MB (params serve.model)")
    try:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        parser = MultipartParser(options[b"boundary"], upload.callbacks())
        received = 0
        async for chunk in stream:
            received += len(chunk)
            if received > limit:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except ServiceError:
        await _drain(stream)
        raise
    except FormParserError as err:
        raise ServiceError(400, f"malformed multipart body ({err})") from None
    except ClientDisconnect:
        raise ServiceError(400, "the client went away during the upload") from None
    finally:
        upload.close()
    if upload.media is None:
        raise ServiceError(400, "no 'file' part: send the media file as multipart field 'file'")
    if upload.size == 0:
        raise ServiceError(400, f"empty upload: {upload.filename!r} has no bytes")
    return upload


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read (and drop) a little more of a refused body, so the client gets to read the answer rather than a reset
    connection; a client that goes quiet, or sends more than DRAIN_BYTES, is answered anyway."""
    drained = 0
    while drained < DRAIN_BYTES:
        try:
            drained += len(await asyncio.wait_for(anext(stream), DRAIN_IDLE))
        except (StopAsyncIteration, TimeoutError, ClientDisconnect):
            return


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
    cues = merge_short_cues(read_subtitles(subtitles), settings.min_segment_s)
    cache = ShardCache(upload.folder / "cache")
    segments = predict_timeline(model.predictor, upload.media, cues, model.config, cache)
    caution = model.bundle.card.caution_for([cache.media_hashes.sha256(upload.media)])
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

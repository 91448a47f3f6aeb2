"""The uploads of ``POST /predict``, read as they stream in: the media to disk, the transcript and subtitles in
memory, each counted against its limit so an oversized body is refused before it is stored, and every refusal a
``ServiceError`` carrying the HTTP status the model service answers with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from features.errors import PipelineError
from selfmm.timeline import SUBTITLE_SUFFIXES

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict defined for type checkers only

MAX_TEXT_BYTES = 64 * 1024  # a transcript part longer than this is refused (the tokenizer keeps far less)
MAX_SUBTITLE_BYTES = 2 * 2**20  # a subtitles part longer than this is refused (hours of cues)
DRAIN_BYTES = 4 * 2**20  # after refusing an upload, read at most this much more of it so the client sees the answer
DRAIN_IDLE = 1.0  # seconds of silence that end that reading


class ServiceError(PipelineError):
    """A request the service refuses: the HTTP status and the message the JSON error carries."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


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

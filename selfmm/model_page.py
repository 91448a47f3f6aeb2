"""What the model service shows a person: the page at ``/`` (model_page.html, one file: its CSS and script inline,
nothing fetched from elsewhere, and only the public HTTP API used) and the API reference at ``/docs``, drawn from
the OpenAPI schema, since FastAPI's Swagger UI would load its scripts from a CDN."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

PAGE = Path(__file__).with_name("model_page.html").read_text(encoding="utf-8")

# POST /predict reads its multipart body as a stream (selfmm/model_service.py), so FastAPI cannot infer it: stated here.
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the media: video or audio"},
                        "text": {"type": "string", "description": "the transcript (none: the text is unknown)"},
                        "subtitles": {
                            "type": "string",
                            "format": "binary",
                            "description": "an .srt or .vtt file: the answer is one prediction per cue",
                        },
                    },
                }
            }
        },
    }
}


def api_reference(schema: dict[str, Any]) -> str:
    """Each path and method of the schema with its summary, the multipart fields of a request body, and the
    link to the schema itself."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            fields = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("multipart/form-data", {})
                .get("schema", {})
                .get("properties", {})
            )
            body = "".join(
                f"<li><code>{_e(name)}</code>: {_e(spec.get('description', ''))}</li>" for name, spec in fields.items()
            )
            rows.append(
                f"<tr><td><code>{_e(method.upper())}</code></td><td><code>{_e(path)}</code></td>"
                f"<td>{_e(operation.get('summary', ''))}{f'<ul>{body}</ul>' if body else ''}</td></tr>"
            )
    info = schema.get("info", {})
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(info.get('title', 'API'))}</title>\n"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}</style>\n</head>\n<body>\n"
        f"<h1>{_e(info.get('title', 'API'))} {_e(info.get('version', ''))}</h1>\n<p>{_e(info.get('summary', ''))}</p>\n"
        '<p>The whole schema: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3). The page: <a href="/">/</a>.</p>\n'
        "<table>\n<tr><th>method</th><th>path</th><th>what</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n</body>\n</html>\n"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)

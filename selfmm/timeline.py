"""Sentiment over time: a long video with subtitles -> one prediction per subtitle cue.

The video is decoded once and every cue becomes a segment of it, cut and scored exactly as a labelled segment of a
CMU-layout dataset is (``features.extract.extract_source``, the shard cache, ``selfmm.batch``), so a segment's
scores are the scores of the same span predicted on its own. A cue that cannot be scored (past the end of the
media, silence, no face) is a row with its error. ``write_timeline`` writes timeline.csv, timeline.png and an
offline timeline.html.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import webvtt
from matplotlib.figure import Figure
from webvtt.errors import MalformedCaptionError, MalformedFileError

from features.cache import ShardCache
from features.config import ExtractConfig
from features.errors import PipelineError
from features.files import atomic_write_text
from features.media import media_duration
from features.types import ClipSpec, SourceVideo
from selfmm.batch import SCORE_NAMES, Inputs, Row, Source, TextSource, predict_inputs, write_predictions
from selfmm.predict import Predictor
from selfmm.report_html import save_png

SUBTITLE_SUFFIXES = (".srt", ".vtt")
FILES = ("timeline.csv", "timeline.png", "timeline.html")
COLOURS = {"sentiment": "#000000", "text_sentiment": "#1f77b4", "audio_sentiment": "#ff7f0e"}
COLOURS["vision_sentiment"] = "#2ca02c"


class SubtitleError(PipelineError):
    """A subtitles file that cannot be read, or holds no usable cue."""


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Segment(Row):
    """One row of timeline.csv: a cue's span and text, and its scores or why there are none."""

    start: float = math.nan
    end: float = math.nan
    text: str = ""


COLUMNS = ("start", "end", "text", *SCORE_NAMES.values(), "face_frames", "error")


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an SRT or WebVTT file (chosen by its suffix), in time order, markup stripped."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUBTITLE_SUFFIXES:
        raise SubtitleError(f"{path}: not a subtitles file (expected {' or '.join(SUBTITLE_SUFFIXES)})")
    if not path.is_file():
        raise SubtitleError(f"{path}: no such subtitles file")
    try:
        captions = webvtt.from_srt(str(path)) if suffix == ".srt" else webvtt.read(str(path))
    except (MalformedFileError, MalformedCaptionError, UnicodeDecodeError) as err:
        raise SubtitleError(f"{path}: not readable as {suffix[1:].upper()} ({err or type(err).__name__})") from None
    cues = [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, " ".join(c.text.split()))
        for c in captions
    ]
    backwards = [c for c in cues if c.end <= c.start]
    if backwards:
        raise SubtitleError(f"{path}: cue at {backwards[0].start:.3f} s ends at {backwards[0].end:.3f} s, not after")
    if not cues:
        raise SubtitleError(f"{path}: no cues")
    return sorted(cues, key=lambda c: (c.start, c.end))


def merge_short_cues(cues: list[Cue], min_seconds: float) -> list[Cue]:
    """Cues shorter than ``min_seconds`` joined with the cues after them (the last with the one before it): a
    segment of a few hundred milliseconds gives openSMILE and the face sampler too little to score."""
    merged: list[Cue] = []
    for cue in cues:
        if merged and merged[-1].end - merged[-1].start < min_seconds:
            merged[-1] = _join(merged[-1], cue)
        else:
            merged.append(cue)
    if len(merged) > 1 and merged[-1].end - merged[-1].start < min_seconds:
        merged[-2:] = [_join(merged[-2], merged[-1])]
    return merged


def _join(first: Cue, second: Cue) -> Cue:
    return Cue(first.start, max(first.end, second.end), f"{first.text} {second.text}".strip())


def predict_timeline(
    predictor: Predictor,
    media: Path,
    cues: list[Cue],
    config: ExtractConfig,
    cache: ShardCache,
    progress: Callable[[float], None] | None = None,
) -> list[Segment]:
    """One segment per cue, in cue order; ``progress`` gets the seconds of video decoded so far."""
    duration = media_duration(media)
    inside = [i for i, cue in enumerate(cues) if cue.start < duration]
    specs = [
        ClipSpec(
            video_id="input",
            clip_id=str(i),
            text=cues[i].text,
            label=math.nan,
            split="test",
            start=cues[i].start,
            end=min(cues[i].end, duration),
        )
        for i in inside
    ]
    rows: dict[int, Row] = {}
    if specs:
        sources = [Source([str(i) for i in inside], SourceVideo(media, specs), [TextSource.SUBTITLES] * len(specs))]
        scored = predict_inputs(predictor, Inputs(sources), config, cache, progress)
        rows = {int(row.clip): row for row in scored}
    segments = []
    for i, cue in enumerate(cues):
        past_end = f"cue starts at {cue.start:.3f} s, after the end of the media ({duration:.3f} s)"
        row = rows.get(i) or Row(str(i), text_source=TextSource.SUBTITLES, error=past_end)
        values = {f.name: getattr(row, f.name) for f in fields(Row)}
        segments.append(Segment(**{**values, "clip": f"{i + 1}"}, start=cue.start, end=cue.end, text=cue.text))
    return segments


def timeline_of(
    predictor: Predictor,
    media: Path,
    subtitles: Path,
    min_segment_s: float,
    config: ExtractConfig,
    cache: ShardCache,
    progress: Callable[[float], None] | None = None,
) -> tuple[list[Segment], str]:
    """The subtitles' cues (short ones joined) scored on ``media``, and the model card's caution when ``media`` is
    not from the synthetic corpus the model was trained on: what the CLI, predict/<d> and the service answer."""
    cues = merge_short_cues(read_subtitles(subtitles), min_segment_s)
    segments = predict_timeline(predictor, media, cues, config, cache, progress)
    return segments, predictor.bundle.card.caution_for([cache.media_hashes.sha256(media)])


def write_timeline(folder: str | Path, segments: list[Segment], title: str) -> dict[str, Path]:
    """timeline.csv, timeline.png and timeline.html in ``folder``, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in FILES}
    write_predictions(paths["timeline.csv"], segments, COLUMNS)
    save_png(paths["timeline.png"], lambda: _figure(segments, title))
    atomic_write_text(paths["timeline.html"], _page(segments, title))
    return paths


def _figure(segments: list[Segment], title: str) -> Figure:
    """Each score as a step over its segment's span: a gap where a segment has no score."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    ax = figure.subplots()
    for name, colour in COLOURS.items():
        xs, ys = [], []
        for s in segments:
            xs += [s.start, s.end, np.nan]
            value = getattr(s, name)
            ys += [value, value, np.nan]
        ax.plot(xs, ys, color=colour, linewidth=2.5 if name == "sentiment" else 1.2, label=name)
    ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sentiment")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return figure


def _page(segments: list[Segment], title: str) -> str:
    """A page that needs nothing else: an inline SVG chart (the text of a segment on hover) and the table."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n"
        f"{chart_svg(segments)}\n{_table(segments)}\n</body>\n</html>\n"
    )


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}td.n{text-align:right}"
    ".error{color:#b00}svg{border:1px solid #ddd}"
)


def chart_svg(segments: list[Segment], width: int = 900, height: int = 260) -> str:
    """Fused and unimodal scores over time as SVG line steps, with each segment's text as its tooltip."""
    end = max((s.end for s in segments), default=1.0) or 1.0
    values = [abs(getattr(s, n)) for s in segments for n in COLOURS if not math.isnan(getattr(s, n))]
    bound = max([1.0, *values])
    pad = 30

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(v: float) -> float:
        return height / 2 - (height / 2 - pad) * v / bound

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="sentiment over time">',
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>',
        f'<text x="2" y="{y(bound) + 4:.1f}" font-size="10">+{bound:g}</text>',
        f'<text x="2" y="{y(-bound) + 4:.1f}" font-size="10">-{bound:g}</text>',
        f'<text x="{width - pad}" y="{height - 4}" font-size="10" text-anchor="end">{end:.1f} s</text>',
    ]
    for s in segments:
        tip = f"{s.start:.2f}-{s.end:.2f} s: {s.text}" + (f" ({s.error})" if s.error else "")
        parts.append(
            f'<g><title>{_e(tip)}</title><rect x="{x(s.start):.1f}" y="{pad}" width="{x(s.end) - x(s.start):.1f}" '
            f'height="{height - 2 * pad}" fill="{"#fee" if s.error else "#f4f4f4"}" stroke="#fff"/>'
        )
        for name, colour in COLOURS.items():
            value = getattr(s, name)
            if not math.isnan(value):
                weight = 3 if name == "sentiment" else 1.5
                parts.append(
                    f'<line x1="{x(s.start):.1f}" x2="{x(s.end):.1f}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                    f'stroke="{colour}" stroke-width="{weight}" data-score="{name}"/>'
                )
        parts.append("</g>")
    legend = " ".join(f'<span style="color:{c}">&#9632; {n}</span>' for n, c in COLOURS.items())
    return "".join(parts) + f"</svg>\n<p>{legend}</p>"


def _table(segments: list[Segment]) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    rows = []
    for s in segments:
        cells = []
        for column in COLUMNS:
            value = getattr(s, column)
            number = isinstance(value, float)
            text = "" if number and math.isnan(value) else f"{value:+.3f}" if number else str(value)
            if column in ("start", "end") and number:
                text = f"{value:.2f}"
            kind = "n" if number else "error" if column == "error" else ""
            cells.append(f'<td class="{kind}">{_e(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)

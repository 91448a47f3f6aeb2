"""What the ``selfmm`` commands print for a person to read (with ``--json`` they print the data as it is)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfmm.published import PUBLISHED, compare_table

if TYPE_CHECKING:  # the command that prints it has loaded it
    from selfmm.batch import Row
    from selfmm.bundle import Bundle
    from selfmm.timeline import Segment

FAILURES_SHOWN = 20


def evaluation_text(result: dict[str, Any], split: str, dataset: str) -> str:
    """Metrics per seed as mean +- std, beside the published ones for a dataset that has them."""
    lines = [f"{split}: {result['clips']} clips, seeds {', '.join(result['seeds'])}"]
    if dataset in PUBLISHED:
        lines.append(compare_table(dataset, result["mean"], result["std"]))
    else:
        lines += [f"  {name:15s} {value:8.4f} ± {result['std'][name]:.4f}" for name, value in result["mean"].items()]
    return "\n".join(lines)


def prediction_text(media: Path, row: Row) -> str:
    text = "text" if row.text_source != "none" else "text (no transcript given)"
    return (
        f"{media}: sentiment {row.sentiment:+.3f} ({text} {row.text_sentiment:+.3f}, "
        f"audio {row.audio_sentiment:+.3f}, vision {row.vision_sentiment:+.3f}; face in {row.face_frames} frames)"
    )


def bundle_text(bundle: Bundle) -> str:
    """A model bundle: its card (what it was trained on, how well it did), then what it is made of."""
    info = bundle.info
    lines = [f"{bundle.path}  bundle format {info['format']}  {'verified' if bundle.verified else 'UNVERIFIED'}"]
    lines += [f"  {line}" for line in bundle.card.lines()]
    lines += [
        f"seeds {', '.join(map(str, bundle.seeds))} (selected {bundle.selected_seed}); "
        f"features {info['feature_config_hash']}",
    ]
    return "\n".join(lines)


def store_text(info: dict[str, Any]) -> str:
    """A feature store in a few lines: dataset, splits, each modality's extractor and provenance, failures."""
    lines = [
        f"{info['path']}  dataset={info['dataset']!r}  schema v{info['schema_version']}  "
        f"package {info['package_version']}  features {info['feature_config_hash']}",
        "clips: " + ", ".join(f"{split} {n}" for split, n in info["splits"].items()) + f" (total {info['clips']})",
    ]
    for modality, prov in info["provenance"].items():
        names = prov["feature_names"]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        identity = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("identity", {}).items())) or "?"
        lines += [
            f"{modality}: {prov['extractor']} {prov['version']}  dim {len(names)}  [{shown}]",
            f"    config {json.dumps(prov['config'], sort_keys=True)}",
            f"    made by {identity}",
        ]
    failures = info["failures"]
    lines.append(f"failures: {len(failures)}")
    lines += [f"    {f['video']}/{f['clip']} [{f['stage']}] {f['error']}" for f in failures[:FAILURES_SHOWN]]
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"    ... {len(failures) - FAILURES_SHOWN} more")
    return "\n".join(lines)


def timeline_text(media: Path, segments: list[Segment], paths: dict[str, Path]) -> str:
    """One line per segment (time, fused score, text), then where the files are."""
    lines = [f"{media}: {len(segments)} segments"]
    for s in segments:
        score = f"{s.sentiment:+.3f}" if not s.error else "  --  "
        lines.append(
            f"  {s.start:8.2f}-{s.end:8.2f} s  {score}  {s.text[:60]}{'  [' + s.error + ']' if s.error else ''}"
        )
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()))
    return "\n".join(lines)


@contextmanager
def decoding_progress(media: Path, steps: int = 10) -> Iterator[Callable[[float], None]]:
    """A callable taking the seconds of ``media`` decoded so far: a bar on a terminal, otherwise a line on stderr
    at every tenth of the way (a log that a pipe or a CI job can follow)."""
    from tqdm import tqdm

    from features.media import media_duration

    duration = media_duration(media)
    with tqdm(total=round(duration, 1), unit="s", desc=f"decoding {media.name}", disable=None, leave=False) as bar:
        said = 0

        def report(seconds: float) -> None:
            nonlocal said
            if not bar.disable:
                bar.update(round(min(seconds, duration), 1) - bar.n)
                return
            step = min(steps, int(steps * seconds / duration)) if duration > 0 else steps
            if step > said:
                said = step
                print(
                    f"decoding {media.name}: {100 * step // steps}% ({seconds:.1f} of {duration:.1f} s)",
                    file=sys.stderr,
                )

        yield report

"""Print the SHA-256 of every feature array of the real MOSI clips, and of each stage of their face features, as
JSON: what tools/cross_debian.sh compares between two C libraries, and what to compare between two CPUs.

    python -m tools.feature_digests [MEDIA_DIR]             # digests as JSON
    python -m tools.feature_digests --compare A.json B.json  # exit 1 naming every clip and array that differs

Each clip is extracted with the default config and no cache, as ``selfmm predict`` would, with its MOSI
transcript; its audio, vision, face mask and token ids are hashed, and so is each stage of the face features
(``face_mediapipe.stage_digests``: frames, landmarks, pose, geometry, placement, crop, emotions), so a
difference names the stage it starts in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

from features import portable_math
from features.config import ExtractConfig
from features.extract import extract_file
from features.extractors.face_mediapipe import MediapipeFaceExtractor, stage_digests
from features.media import decode

MOSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mosi"
ARRAYS = ("audio", "vision", "face_mask", "input_ids")


def transcripts() -> dict[str, str]:
    """MOSI's transcripts by clip name; empty where the label file is absent."""
    labels = MOSI / "MMCPanda_label.csv"
    if not labels.is_file():
        return {}
    with open(labels, newline="") as f:
        return {row["id"]: row["text"] for row in csv.DictReader(f)}


def clip_digests(media: Path, text: str, face: MediapipeFaceExtractor) -> dict[str, str]:
    config = ExtractConfig()
    clip = extract_file(media, text, config)
    digests = {name: hashlib.sha256(getattr(clip, name).tobytes()).hexdigest() for name in ARRAYS}
    frames = decode(media, fps=config.face.fps, max_side=config.face.max_side, audio=False).frames
    digests.update({f"face.{stage}": digest for stage, digest in stage_digests(face, frames).items()})
    return digests


def compare(here: dict[str, dict[str, str]], there: dict[str, dict[str, str]]) -> list[str]:
    """One line per clip whose digests differ, naming the arrays and stages (a clip missing on one side counts)."""
    differ = []
    for clip in sorted(here.keys() | there.keys()):
        a, b = here.get(clip, {}), there.get(clip, {})
        moved = [name for name in sorted(a.keys() | b.keys()) if a.get(name) != b.get(name)]
        if moved:
            differ.append(f"{clip}: {', '.join(moved)} differ")
    return differ


def main() -> None:
    if sys.argv[1:2] == ["--compare"]:
        here, there = (json.loads(Path(p).read_text()) for p in sys.argv[2:4])
        differ = compare(here, there)
        print("\n".join(differ) or f"{len(here)} clips: every array and stage byte-identical")
        sys.exit(1 if differ else 0)
    portable_math.reexec()
    media_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else MOSI / "media"
    texts, face = transcripts(), MediapipeFaceExtractor(ExtractConfig().face)
    digests = {p.name: clip_digests(p, texts.get(p.stem, ""), face) for p in sorted(media_dir.glob("*.mp4"))}
    json.dump(digests, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()

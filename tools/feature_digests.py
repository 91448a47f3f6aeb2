"""Print the SHA-256 of every feature array of the real MOSI clips, as JSON: what tools/cross_debian.sh compares.

    python -m tools.feature_digests [MEDIA_DIR]          # digests as JSON
    python -m tools.feature_digests --compare A.json B.json  # exit 1 naming every clip and array that differs

Each clip is extracted with the default config and no cache, as ``selfmm predict`` would; its audio, vision,
face mask and token ids are hashed, and so is each stage of the face features (``face_stage_digests``), so a
difference names the stage that moved.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from features.config import ExtractConfig
from features.extract import extract_file

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mosi" / "media"
ARRAYS = ("audio", "vision", "face_mask", "input_ids")


def clip_digests(media: Path) -> dict[str, str]:
    clip = extract_file(media, "", ExtractConfig())
    return {name: hashlib.sha256(getattr(clip, name).tobytes()).hexdigest() for name in ARRAYS}


def compare(here: dict[str, dict[str, str]], there: dict[str, dict[str, str]]) -> list[str]:
    """One line per clip and array whose digests differ (a clip missing on one side counts)."""
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
        print("\n".join(differ) or f"{len(here)} clips: every array byte-identical")
        sys.exit(1 if differ else 0)
    media_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else MEDIA
    digests = {path.name: clip_digests(path) for path in sorted(media_dir.glob("*.mp4"))}
    json.dump(digests, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()

"""The shard cache is only a cache, and it heals: a shard or an extractor record that fails its check is moved
aside with a warning naming it and made again from the media in the same run, and the store comes out the same
bytes as from an undamaged cache."""

import json
import logging
import struct
import zipfile
from pathlib import Path

import pytest

from features.cache import DAMAGED, ShardCache
from features.config import ExtractConfig, FaceConfig, Modality
from features.datasets import load_dataset
from features.extract import SourceStatus, build_store, extract_source

CONFIG = ExtractConfig(face=FaceConfig(fps=2.0, max_side=320))


def extract_store(dataset: Path, cache_dir: Path, out: Path) -> list[SourceStatus]:
    spec = load_dataset(dataset)
    cache = ShardCache(cache_dir)
    statuses = [extract_source(source, CONFIG, cache).status for source in spec.sources]
    build_store(out, spec, CONFIG, cache)
    return statuses


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def in_the_data(path: Path) -> None:
    """A byte in the middle of the largest array."""
    with zipfile.ZipFile(path) as zf:
        member = max(zf.infolist(), key=lambda m: m.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    flip(path, start + member.file_size // 2)


def in_a_local_name(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        flip(path, zf.infolist()[0].header_offset + 30)


def in_the_directory_crc(path: Path) -> None:
    """The CRC-32 the central directory records for the first member."""
    with zipfile.ZipFile(path) as zf:
        flip(path, zf.start_dir + 16)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_shard_costs_one_re_extraction_and_the_store_is_the_same_bytes(mosi_dataset, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    reference = tmp_path / "reference.h5"
    extract_store(mosi_dataset, cache_dir, reference)
    assert struct.unpack("<I", (sorted((cache_dir / "audio").glob("*/*.npz"))[0]).read_bytes()[:4])[0] == 0x04034B50
    damages = [
        (Modality.AUDIO, in_the_data),
        (Modality.VISION, in_the_data),
        (Modality.AUDIO, in_a_local_name),
        (Modality.VISION, in_the_directory_crc),
        (Modality.AUDIO, truncated),
        (Modality.VISION, truncated),
    ]
    for i, (modality, damage) in enumerate(damages):
        shard = sorted((cache_dir / modality.value).glob("*/*.npz"))[i % 3]
        damage(shard)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="features.cache"):
            statuses = extract_store(mosi_dataset, cache_dir, tmp_path / "healed.h5")
        what = f"{modality.value} shard, {damage.__name__}"
        assert sorted(statuses) == sorted([SourceStatus.EXTRACTED] + [SourceStatus.CACHED] * 2), what
        assert (tmp_path / "healed.h5").read_bytes() == reference.read_bytes(), what
        assert f"damaged cache file {shard}" in caplog.text and f"moved to {shard.name}{DAMAGED}" in caplog.text, what
        assert shard.is_file() and shard.with_name(shard.name + DAMAGED).is_file(), what  # made again; kept aside
        shard.with_name(shard.name + DAMAGED).unlink()


def test_a_damaged_extractor_record_is_made_again(mosi_dataset, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    reference = tmp_path / "reference.h5"
    extract_store(mosi_dataset, cache_dir, reference)
    records = sorted(cache_dir.glob("*/extractor-*.json"))
    assert {r.parent.name for r in records} == {m.value for m in Modality}
    for record in records:
        original = record.read_text()
        damaged = json.loads(original)
        damaged["provenance"]["version"] += "x"  # still valid JSON, and a plausible record
        record.write_text(json.dumps(damaged))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="features.cache"):
            extract_store(mosi_dataset, cache_dir, tmp_path / "healed.h5")
        assert (tmp_path / "healed.h5").read_bytes() == reference.read_bytes(), record.name
        assert f"damaged cache file {record}" in caplog.text and "hash does not match" in caplog.text
        assert record.read_text() == original


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"provenance": {"extractor": 1}}'])
def test_an_unreadable_extractor_record_is_no_record(tmp_path, content):
    cache = ShardCache(tmp_path)
    path = tmp_path / "audio" / "extractor-abc.json"
    path.parent.mkdir()
    path.write_bytes(content)
    assert cache.load_provenance(Modality.AUDIO, "abc") is None
    assert not path.exists() and path.with_name(path.name + DAMAGED).read_bytes() == content

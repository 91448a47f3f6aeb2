"""Small models that accept what the extractors here make from raw media, their champion releases, and the model
service run for real (uvicorn on a free loopback port, in a thread of the test process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from features.cache import ShardCache
from features.config import ExtractConfig
from features.datasets import load_dataset
from features.extract import build_store
from selfmm.config import TrainConfig
from selfmm.trainer import train
from tests.support.data import (
    MOSI_CLIPS,
    MOSI_MEDIA,
    add_clip,
    free_port,
    real_frames,
    speech_like,
    write_label_csv,
    write_video,
)
from tests.support.synthetic import make_text_model


@dataclass
class RealModels:
    """Two tiny bundles (seeds 1 and 2) trained on features extracted here from real and synthetic media."""

    first: Path
    second: Path
    data: Path  # their dataset folder (MMSA layout): 3 real MOSI clips and 5 synthetic talking faces
    cache: Path  # the shard cache the features went through
    short_clip: Path  # a 2 s synthetic clip with a face and a voice: cheap to predict


def talking_face(path: Path, seconds: float = 2.0, seed: int = 0, audio: bool = True) -> Path:
    """A real face photo (slightly moving) with a voiced tone: a face in every frame, never silent."""
    fps = 10
    return write_video(
        path, real_frames(int(seconds * fps), 128), fps=fps, audio=speech_like(seconds, seed=seed) if audio else None
    )


def make_real_models(root: Path) -> RealModels:
    bert = make_text_model(root / "bert")
    data = root / "data"
    rows = []
    for (name, (text, label)), mode in zip(MOSI_CLIPS.items(), ["train", "valid", "test"], strict=True):
        video_id, clip_id = name.rsplit("_", 1)
        rows.append(add_clip(data, video_id, clip_id, MOSI_MEDIA / f"{name}.mp4", text, label, mode))
    for i in range(5):
        talking_face(data / "Raw" / f"syn{i}" / "0.mp4", seed=i)
        rows.append(
            {"video_id": f"syn{i}", "clip_id": "0", "text": "a good movie", "label": 1.5 - i * 0.5, "mode": "train"}
        )
    write_label_csv(data, rows)
    config = ExtractConfig.from_dict({"face": {"fps": 5.0}, "text": {"model": str(bert)}})
    cache = root / "cache"
    build_store(root / "features.h5", load_dataset(data), config, ShardCache(cache))
    bundles = []
    for seed in (1, 2):
        train_config = TrainConfig(
            text_model=str(bert),
            seeds=[seed],
            batch_size=4,
            update_epochs=1,
            max_epochs=1,
            early_stop=1,
            H=3.0,
            metrics="mosi",
        )
        bundles.append(train(root / "features.h5", root / f"model{seed}", train_config).out_dir)
    return RealModels(bundles[0], bundles[1], data, cache, talking_face(root / "short.mp4", seed=9))


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)

"""What portable numerics cost, and which settings it takes to be exact.

Trains the demo preset on a feature store in fresh processes (as `dvc repro` runs `selfmm train`), for each
setting twice: on this CPU as it is, and with another CPU emulated from outside (torch's AVX2 kernels, MKL's AVX2
code path, one thread). Prints seconds per epoch and whether the weights came out byte-identical.

    python -m benchmarks.bench_numerics [--features build/demo/features.h5] [--epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SELFMM = Path(sys.executable).parent / "selfmm"
ANOTHER_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
PINNED = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_ENABLE_INSTRUCTIONS",
)
# name -> (train.numerics, environment set from outside)
SETTINGS = {
    "fast": ("fast", {}),
    "portable without MKL_CBWR": (
        "fast",
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    ),
    "portable": ("portable", {}),
}


def train(workdir: Path, features: Path, numerics: str, env: dict[str, str]) -> tuple[str, list[float], float]:
    """One `selfmm train` in a fresh process: (sha256 of the weights, seconds per epoch, wall seconds)."""
    out = Path(tempfile.mkdtemp(dir=workdir)) / "model"
    environ = {k: v for k, v in os.environ.items() if k not in PINNED}
    environ.update(env)
    started = time.perf_counter()
    subprocess.run(
        [
            str(SELFMM),
            "train",
            "--features",
            str(features),
            "--out",
            str(out),
            "--params",
            str(workdir / "params.yaml"),
            "--set",
            f"numerics={numerics}",
        ],
        cwd=workdir,
        env=environ,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    with open(out.parent / "model.timings.csv") as f:
        seconds = [float(row["train_seconds"]) for row in csv.DictReader(f)]
    weights = sorted((out / "weights").glob("*.safetensors"))
    digest = hashlib.sha256(b"".join(w.read_bytes() for w in weights)).hexdigest()
    return digest, seconds, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--features", type=Path, default=Path("build/demo/features.h5"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1111)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        params = {"train": {"preset": "demo", "seeds": [args.seed], "max_epochs": args.epochs}}
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        features = args.features.resolve()
        print(f"demo preset, {args.epochs} epochs, seed {args.seed}, on {features}")
        for name, (numerics, env) in SETTINGS.items():
            here, seconds, wall = train(workdir, features, numerics, env)
            there, _, _ = train(workdir, features, numerics, {**env, **ANOTHER_CPU})
            per_epoch = sum(seconds) / len(seconds)
            print(
                f"{name:>26}: {per_epoch:6.2f} s per epoch ({wall:5.1f} s whole process); "
                f"on an emulated other CPU: {'the same bits' if here == there else 'other bits'}"
            )


if __name__ == "__main__":
    main()

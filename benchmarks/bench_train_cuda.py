"""Time Self-MM training epochs on CUDA: fixed vs dynamic padding, plus length buckets and bf16 autocast.

Self-contained: a synthetic MOSI-size store, and a random BERT of MiniLM's shape when the MiniLM package is
not installed (the GPU machine needs only torch, transformers, h5py, safetensors and scikit-learn).

    python benchmarks/bench_train_cuda.py [--epochs 3] [--json out.json]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import main  # noqa: E402

if __name__ == "__main__":
    main(["--device", "cuda", "--epochs", "3", "--amp", "--bucket", *sys.argv[1:]])

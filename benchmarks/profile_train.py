"""Where a Self-MM training step spends its time on the CPU, part by part, on bench_train.py's MOSI-like store.

Each part of one step is timed alone on the same real batches, forward and backward together where it has
weights: MiniLM over the batch's tokens (also by operator), each LSTM over its padded frames, the four heads and
the loss, ULGM's update, Adam's step (one per ``update_epochs`` batches, shown per batch), and loading plus collation.
The sum is set beside a whole training step, so the rest is Python overhead between the parts.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.profile_train --batches 30 [--bucket] [--threads 2]

On a CPU with AVX-512, ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`` in the
environment profiles the code paths of an AVX2-only CPU (a Zen 1 to 3).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.bench_train import _default_text_model, build_workload
from features.store import FeatureStore
from selfmm.config import preset
from selfmm.data import Batch, ClipDataset, feature_dims, make_loader
from selfmm.model import SelfMM
from selfmm.text_encoder import load_text_encoder
from selfmm.trainer import make_optimizer, multitask_loss
from selfmm.ulgm import ULGM


def timed(run: Callable[[Batch], object], batches: list[Batch]) -> float:
    """Mean milliseconds of ``run`` per batch."""
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return 1000 * (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--bucket", action="store_true", help="length-bucketed batches")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bert-dropout", type=float, default=0.1, help="BERT's dropout (0.1, its own, as trained)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        workload = argparse.Namespace(
            text_model=_default_text_model(), bert_dropout=args.bert_dropout, scale=1.0, seed=1111
        )
        text_model, path, _ = build_workload(Path(tmp), workload)
        config = preset("mosi", text_model=text_model, bucket_by_length=args.bucket)
        with FeatureStore(path) as store:
            dims = feature_dims(store)
            data = ClipDataset.from_store(store, "train", dims)
        model = SelfMM(config.model, dims["audio"], dims["vision"], load_text_encoder(text_model))
        model.train()
        loader = make_loader(data, config.batch_size, True, torch.Generator().manual_seed(1), args.bucket)
        start = time.perf_counter()
        batches = [b for _, b in zip(range(args.batches), loader, strict=False)]
        load_ms = 1000 * (time.perf_counter() - start) / len(batches)
        optimizer = make_optimizer(model, config)
        ulgm = ULGM(torch.from_numpy(data.labels), model.feature_dims(), config.H)
        encoder, audio, video = model.text_encoder, model.audio_model, model.vision_model

        def bert(b: Batch) -> None:
            encoder(b.input_ids, b.attention_mask).sum().backward()

        def lstm(module: torch.nn.Module, name: str) -> Callable[[Batch], None]:
            def run(b: Batch) -> None:
                module(getattr(b, name), getattr(b, f"{name}_lengths")).sum().backward()

            return run

        def whole_step(b: Batch) -> None:
            out = model(b)
            multitask_loss(out.preds, ulgm.targets(b.index)).backward()
            ulgm.step(b.index, out.features, 2)

        features = {t: f.detach() for t, f in model(batches[0]).features.items()}

        def features_of(b: Batch) -> dict[str, torch.Tensor]:
            """Stand-in F_s rows of the batch's size: ULGM's cost does not depend on their values."""
            return {t: f[:1].expand(len(b.index), -1) for t, f in features.items()}

        def heads(b: Batch) -> None:
            with torch.no_grad():
                t = encoder(b.input_ids, b.attention_mask)
                a, v = audio(b.audio, b.audio_lengths), video(b.vision, b.vision_lengths)
            start_heads = time.perf_counter()
            fused = {"M": torch.cat([t, a, v], -1), "T": t, "A": a, "V": v}
            preds = {task: model.heads[task](fused[task])[0] for task in fused}
            multitask_loss(preds, ulgm.targets(b.index)).backward()
            heads_seconds.append(time.perf_counter() - start_heads)

        heads_seconds: list[float] = []
        parts = {
            "loading + collation": load_ms,
            "MiniLM fwd+bwd": timed(bert, batches),
            "audio LSTM fwd+bwd": timed(lstm(audio, "audio"), batches),
            "video LSTM fwd+bwd": timed(lstm(video, "vision"), batches),
        }
        timed(heads, batches)
        parts["heads + loss fwd+bwd"] = 1000 * sum(heads_seconds) / len(heads_seconds)
        parts["ULGM update"] = timed(lambda b: ulgm.step(b.index, features_of(b), 2), batches)
        optimizer.step()  # the first step also creates Adam's moments
        parts["Adam step / update_epochs"] = timed(lambda _: optimizer.step(), batches[:8]) / config.update_epochs
        whole = timed(whole_step, batches) + parts["Adam step / update_epochs"] + load_ms
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            timed(bert, batches)
        groups = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in optimizer.param_groups]
        loop_adam = torch.optim.Adam(groups, fused=False)
        loop_adam.step()
        loop_adam_ms = timed(lambda _: loop_adam.step(), batches[:8]) / config.update_epochs

    tokens = sum(b.input_ids.numel() for b in batches) / len(batches)
    real_tokens = sum(int(b.attention_mask.sum()) for b in batches) / len(batches)
    frames = [sum(getattr(b, m).shape[1] for b in batches) / len(batches) for m in ("audio", "vision")]
    print(
        f"{len(batches)} batches of {config.batch_size}{' (bucketed)' if args.bucket else ''}, "
        f"torch threads {torch.get_num_threads()}, padded per batch: {tokens:.0f} tokens ({real_tokens:.0f} real), "
        f"{frames[0]:.0f} audio and {frames[1]:.0f} video frames"
    )
    for name, ms in parts.items():
        print(f"{name:>28}: {ms:7.1f} ms/batch  {100 * ms / whole:5.1f} %")
    print(f"{'sum of parts':>28}: {sum(parts.values()):7.1f} ms/batch")
    print(f"{'whole step':>28}: {whole:7.1f} ms/batch  ({1000 * config.batch_size / whole:.1f} samples/s)")
    print(f"before: Adam, a loop over the tensors (not fused) {loop_adam_ms:.1f} ms/batch")
    print("MiniLM fwd+bwd by operator (torch.profiler, its own time; the profiler adds its overhead):")
    ops = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    for event in ops[:10]:
        share = 100 * event.self_cpu_time_total / total
        print(f"{event.key[:40]:>42}: {event.self_cpu_time_total / 1000 / len(batches):7.1f} ms/batch  {share:5.1f} %")


if __name__ == "__main__":
    main()

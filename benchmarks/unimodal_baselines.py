"""Unimodal baselines: how much of each modality's own sentiment its features carry.

For each of text, audio and vision, Self-MM's subnet for that modality and its unimodal head (text: the BERT and
the text head; audio and vision: the LSTM and its head) are trained alone on the store's *true* unimodal label
y_s, with the preset's optimiser, batches and early stopping on the head's validation L1. Nothing else is
trained. The test metrics of that head against y_s are the ceiling for what ULGM's generated labels could
teach the same head, and a check that each modality's signal can be learned at all.

    python -m benchmarks.unimodal_baselines [--features build/demo/features.h5] [--preset demo]

Runs under the preset's numerics (portable for the demo: the numbers reproduce on any x86-64 CPU with AVX2).
"""

from __future__ import annotations

import argparse
import copy
import math

from selfmm.config import preset
from selfmm.numerics import prepare_process

MODALITIES = {"T": "text", "A": "audio", "V": "vision"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="build/demo/features.h5")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the preset's")
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=list(MODALITIES))
    args = parser.parse_args()
    config = preset(args.preset, **({"seeds": args.seeds} if args.seeds else {}))
    prepare_process(config.numerics, config.threads)  # before torch loads

    import numpy as np
    import torch

    from features.store import FeatureStore
    from features.types import SPLITS
    from selfmm.data import ClipDataset, feature_dims, frame_statistics, make_loader
    from selfmm.metrics import compute_metrics, mean_std
    from selfmm.model import SelfMM
    from selfmm.predict import run_model
    from selfmm.text_encoder import load_text_encoder
    from selfmm.trainer import IMPROVEMENT, l1, make_optimizer

    torch.set_num_threads(config.threads or torch.get_num_threads())
    torch.use_deterministic_algorithms(True, warn_only=True)
    with FeatureStore(args.features) as store:
        dims = feature_dims(store)
        data = {split: ClipDataset.from_store(store, split, dims, in_memory=True) for split in SPLITS}
        truth = {
            (split, m): np.array([store.read_labels(split, f"label_{m}")[k] for k in data[split].keys], np.float32)
            for split in SPLITS
            for m in MODALITIES
        }
    train_items = (data["train"][i] for i in range(len(data["train"])))
    statistics = frame_statistics(train_items, dims) if config.standardise_features else None
    encoder = load_text_encoder(config.text_model)
    valid_loader = make_loader(data["valid"], config.batch_size)
    test_loader = make_loader(data["test"], config.batch_size)
    print(f"{args.features}: {', '.join(f'{s} {len(d)}' for s, d in data.items())} clips; preset {args.preset}")
    for m in args.modalities:
        name = MODALITIES[m]
        y_train = torch.from_numpy(truth["train", m])
        per_seed = []
        for seed in config.seeds:
            torch.manual_seed(seed)
            model = SelfMM(config.model, dims["audio"], dims["vision"], copy.deepcopy(encoder))
            if statistics is not None:
                model.set_feature_statistics(statistics)
            optimizer = make_optimizer(model, config)
            loader = make_loader(
                data["train"], config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
            )
            best, best_epoch, best_state, epoch = math.inf, 0, None, 0
            while epoch - best_epoch < config.early_stop and epoch != config.max_epochs:
                epoch += 1
                model.train()
                optimizer.zero_grad()
                for b, batch in enumerate(loader):
                    loss = (model(batch).preds[m] - y_train[batch.index]).abs().mean()
                    loss.backward()
                    last = config.step_trailing_batches and b == len(loader) - 1
                    if b % config.update_epochs == config.update_epochs - 1 or last:
                        optimizer.step()
                        optimizer.zero_grad()
                valid = l1(run_model(model, valid_loader, torch.device("cpu"))[m], truth["valid", m])
                if valid <= best - IMPROVEMENT:
                    best, best_epoch, best_state = valid, epoch, copy.deepcopy(model.state_dict())
            assert best_state is not None
            model.load_state_dict(best_state)
            pred = run_model(model, test_loader, torch.device("cpu"))[m]
            per_seed.append(compute_metrics(config.metrics, pred, truth["test", m]))
            print(f"  {name:6s} seed {seed}: best epoch {best_epoch} of {epoch}, test MAE {per_seed[-1]['MAE']:.3f}")
        mean, std = mean_std(per_seed)
        y_test = truth["test", m]
        baseline = float(np.mean(np.abs(y_test - y_train.numpy().mean())))
        accuracy = next(iter(mean))  # the family's binary accuracy: Mult_acc_2 (sims) or Has0_acc_2 (mosi)
        print(
            f"{name}-only head on y_{m}: test MAE {mean['MAE']:.3f} ± {std['MAE']:.3f} (train-mean baseline "
            f"{baseline:.3f}), Corr {mean['Corr']:.3f} ± {std['Corr']:.3f}, {accuracy} {mean[accuracy]:.3f}"
        )


if __name__ == "__main__":
    main()

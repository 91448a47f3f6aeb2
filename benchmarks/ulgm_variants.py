"""ULGM's label rules side by side: what each one's generated labels recover, and what it costs the model.

Trains the demo preset once per label rule (``train.ulgm``: faithful, scale_aware, centre_normalised) on a store
with true unimodal labels, evaluates it as ``selfmm evaluate --report`` does, and prints per rule the fused test
metrics and, per modality, the offset recovery r(g_s - y_m, y_s - y_m), r(g_s, y_s) and the sign agreement, each
as mean ± std over the seeds.

``--scales 1 3`` also runs every rule on a MOSI-scale copy of the store: the same features with every label
(and H) multiplied by 3, so labels lie in [-3, 3] as MOSI's do, scored with the MOSI metrics. A rule that
respects the label scale gives the same recovery on both.

    python -m benchmarks.ulgm_variants [--features build/demo/features.h5] [--scales 1 3] [--rules ...]

Runs under the preset's numerics (portable for the demo: the numbers reproduce on any x86-64 CPU with AVX2).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import h5py

from selfmm.config import LabelRule, preset
from selfmm.numerics import prepare_process

LABELS = ("label", "label_T", "label_A", "label_V")


def scaled_copy(features: Path, scale: float, out: Path) -> Path:
    """A copy of the store whose every label attribute is multiplied by ``scale``."""
    shutil.copyfile(features, out)
    with h5py.File(out, "r+") as f:
        clips = f["clips"]
        assert isinstance(clips, h5py.Group)
        for clip in clips.values():
            for name in LABELS:
                clip.attrs[name] = float(clip.attrs[name]) * scale
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=Path("build/demo/features.h5"))
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument(
        "--rules", nargs="+", default=[r.value for r in LabelRule], choices=[r.value for r in LabelRule]
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the preset's")
    args = parser.parse_args()
    base = preset(args.preset, **({"seeds": args.seeds} if args.seeds else {}))
    prepare_process(base.numerics, base.threads)  # before torch loads

    from selfmm.report import write_report
    from selfmm.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for scale in args.scales:
            store = args.features if scale == 1 else scaled_copy(args.features, scale, work / f"x{scale:g}.h5")
            for rule in args.rules:
                config = dataclasses.replace(
                    base, ulgm=rule, H=base.H * scale, metrics=base.metrics if scale == 1 else "mosi"
                )
                model = work / f"{rule}_x{scale:g}"
                train(store, model, config)
                report = write_report(model, store, work / f"{model.name}_report", device="cpu")
                print(f"\n{rule}, labels x{scale:g} (H {config.H:g}, {config.metrics} metrics)", flush=True)
                print(f"  test MAE {report['mean']['MAE']:.4f} ± {report['std']['MAE']:.4f}", end="")
                print(f", Corr {report['mean']['Corr']:.4f} ± {report['std']['Corr']:.4f}")
                for m, r in report["unimodal_recovery"].items():
                    print(
                        f"  {m}: offset {r['offset']:+.3f} ± {r['offset_std']:.3f}, r(g, y) {r['generated']:+.3f} ± "
                        f"{r['generated_std']:.3f} (y_m: {r['multimodal']:+.3f}), sign agreement "
                        f"{r['sign_agreement']:.3f} (y_m: {r['sign_agreement_multimodal']:.3f})"
                    )


if __name__ == "__main__":
    main()

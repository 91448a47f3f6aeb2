"""``selfmm``: the one command-line entry point. Each subcommand is thin glue over features/, selfmm/, flows/."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.settings import apply_defaults


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"selfmm {args.command}: error: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfmm", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("extract", help="raw dataset folder -> HDF5 feature store (runs the feature-extract flow)")
    p.add_argument("--dataset", required=True, help="dataset folder (MMSA layout) or a name under data/")
    p.add_argument("--out", required=True, type=Path, help="the .h5 store to write")
    p.add_argument("--params", default=None, help="params file (default: params.yaml if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an extract setting, e.g. --set face.fps=5 (repeatable)")
    p.add_argument("--cache-dir", default=None, help="shard cache folder (default: params run.cache_dir)")
    p.add_argument("--workers", type=int, default=None, help="parallel source videos (default: params run.workers)")
    p.set_defaults(handler=_extract)

    p = sub.add_parser("info", help="summarise a feature store")
    p.add_argument("store", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_info)
    return parser


def _extract(args: argparse.Namespace) -> int:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.extract import feature_extract
    from flows.params import load_params, parse_overrides

    params = load_params(args.params)
    workers = args.workers or int((params.get("run") or {}).get("workers", 2))
    flow = feature_extract.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    summary = flow(dataset=args.dataset, out=str(args.out), overrides=parse_overrides(args.overrides),
                   params_file=args.params, cache_dir=args.cache_dir, progress=sys.stderr.isatty())
    print(json.dumps(summary, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from features.store import FeatureStore

    with FeatureStore(args.store) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}  dataset={info['dataset']!r}  schema v{info['schema_version']}  "
          f"package {info['package_version']}  features {info['feature_config_hash']}")
    print("clips: " + ", ".join(f"{split} {n}" for split, n in info["splits"].items()) + f" (total {info['clips']})")
    for modality, prov in info["provenance"].items():
        names = prov["feature_names"]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        print(f"{modality}: {prov['extractor']} {prov['version']}  dim {len(names)}  [{shown}]")
        print(f"    config {json.dumps(prov['config'], sort_keys=True)}")
    print(f"failures: {len(info['failures'])}")
    for failure in info["failures"][:20]:
        print(f"    {failure['video']}/{failure['clip']} [{failure['stage']}] {failure['error']}")
    if len(info["failures"]) > 20:
        print(f"    ... {len(info['failures']) - 20} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())

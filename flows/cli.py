"""``selfmm``: the one command-line entry point. Each subcommand is thin glue over features/, selfmm/, flows/."""

from __future__ import annotations

import argparse
import atexit
import ctypes.util
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features import portable_math
from features.errors import ConfigError, PipelineError
from flows.settings import apply_defaults

if TYPE_CHECKING:  # loaded by the commands that need it
    from flows.params import Params, RunConfig


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A project error (``PipelineError``: bad params, a dataset it cannot use, ...) is one
    line on stderr and exit code 1; anything else is a bug and propagates with its traceback. ``--debug``
    shows the traceback of project errors too."""
    parser = _parser()
    args = parser.parse_args(argv)
    apply_defaults(verbose=args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        _prepare_numerics(args)
        if not _runs_flow(args):
            return args.handler(args) or 0
        _check_inputs(args)
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from flows.local_server import local_api
        from flows.params import load_params
        from selfmm.numerics import environment

        serve = load_params(getattr(args, "params", None)).serve
        url = local_api(serve.port, serve.idle_stop_s, meanwhile=_next_imports(args.command))
        # No flow-run heartbeats: they only feed automations (this project defines none), and stopping their
        # thread waits out its 1 s sleep, twice per command. The served deployments keep them.
        with (
            temporary_settings(updates={PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
            environment("PREFECT_API_URL", url),  # DVC stages too
        ):
            return args.handler(args) or 0
    except PipelineError as err:
        if args.debug:
            traceback.print_exc()
        print(f"selfmm: error: {err}", file=sys.stderr)
        return 1


def console() -> None:
    """The ``selfmm`` console script: ``main()``, then Python's exit handlers (Prefect drains its logs and events
    to the server in them), then an immediate exit. Python's teardown of every loaded module (Prefect, pydantic,
    numpy, ...) took about 0.8 s after a flow, and nothing is left to write by then: stores, shards and reports
    are written atomically and closed before ``main`` returns. An exception that escapes ``main`` is a bug and
    takes Python's normal exit, traceback and all."""
    status: list[int] = []

    def exit_now() -> None:
        if status:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status[0])

    # a restart, before anything is loaded: features the same bytes under any C library; training on tcmalloc
    portable_math.reexec(also=training_allocator(sys.argv[1:]))
    atexit.register(exit_now)  # registered first, so it runs after every other exit handler
    status.append(main())
    sys.exit(status[0])


def _next_imports(command: str) -> Callable[[], object] | None:
    """The libraries a flow command loads next (torch and the trainer: seconds), to load while a server boots."""
    module = {"train": "selfmm.trainer", "retrain": "selfmm.trainer", "evaluate": "selfmm.report"}.get(command)
    return None if module is None else partial(importlib.import_module, module)


def training_allocator(argv: list[str]) -> tuple[str, ...]:
    """tcmalloc for the commands that train, where it is installed (Debian's libtcmalloc-minimal4, which setup.sh
    installs): glibc's malloc keeps freed memory of a training run's ever-changing batch shapes in scattered
    pieces and returns it late. The numbers are in benchmarks/README.md. Other commands keep the C library's
    (the processes a training command starts, a DVC stage or the Prefect server, inherit tcmalloc)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in ("train", "retrain") or not (tcmalloc := ctypes.util.find_library("tcmalloc_minimal")):
        return ()
    os.environ.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))  # no note per large array
    return (tcmalloc,)


def _check_inputs(args: argparse.Namespace) -> None:
    """What a flow command reads, checked before a server starts for it: a typo costs no server start."""
    if args.command == "extract":
        from flows.extract import dataset_folder
        from flows.params import load_params, parse_overrides

        params = load_params(args.params)
        params.extract_config(parse_overrides(args.overrides))
        _run_config(params, args)
        dataset_folder(args.dataset)


def _runs_flow(args: argparse.Namespace) -> bool:
    """Commands that run a Prefect flow in this process (and the DVC stages they start) share one server."""
    return args.command in ("extract", "train", "retrain") or (args.command == "evaluate" and bool(args.report))


def _option(*names: str, **settings: Any) -> argparse.ArgumentParser:  # Any: add_argument's keywords
    """A parent parser with one option that several subcommands share, spelled once."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*names, **settings)
    return parent


def _parser() -> argparse.ArgumentParser:
    from selfmm.config import DEVICES

    params = _option("--params", default=None, help="params file (default: the project's params.yaml, if any)")
    cache = _option("--cache-dir", default=None, help="shard cache folder (default: params run.cache_dir)")
    as_json = _option("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="selfmm", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    parser.add_argument(
        "--verbose", action="store_true", help="let third-party libraries (TFLite, MediaPipe, transformers) talk"
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser(
        "extract",
        parents=[params, cache],
        help="raw dataset folder -> HDF5 feature store (runs the feature-extract flow)",
    )
    p.add_argument("--dataset", required=True, help="dataset folder (MMSA layout) or a name under data/")
    p.add_argument("--out", required=True, type=Path, help="the .h5 store to write")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override an extract setting, e.g. --set face.fps=5 (repeatable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel source videos: threads, or local Dask workers (default: params run.workers)",
    )
    p.add_argument(
        "--task-runner",
        default=None,
        choices=["threads", "processes", "dask"],
        help="where source videos run (default: params run.task_runner, else threads)",
    )
    p.add_argument(
        "--dask-address",
        default=None,
        metavar="tcp://HOST:8786",
        help="with --task-runner dask: an existing Dask scheduler (default: params run.dask_address, "
        "else a local cluster of --workers processes)",
    )
    p.set_defaults(handler=_extract)

    p = sub.add_parser("demo-corpus", help="generate the built-in demo corpus (MMSA layout, real media)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus folder")
    p.set_defaults(handler=_demo_corpus)

    p = sub.add_parser("train", parents=[params], help="train Self-MM on a feature store (runs the train flow)")
    p.add_argument("--features", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="model bundle folder")
    p.add_argument("--section", default="train", help="the params section to read (default: train)")
    p.add_argument("--preset", default=None, help="mosi | mosei | sims | demo (default: the section's preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--device", default=None, choices=DEVICES)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training parameter, e.g. --set max_epochs=3 (repeatable)",
    )
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "evaluate", parents=[as_json], help="metrics of a trained bundle on a split, per seed and mean +- std"
    )
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--features", required=True, type=Path)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write metrics.json and plot tables here (runs the evaluate flow)",
    )
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser(
        "predict",
        parents=[params, cache, as_json],
        help="fused and per-modality sentiment of a media file, a folder of media or a dataset folder",
    )
    p.add_argument(
        "media",
        type=Path,
        help="a media file, a folder of media (searched recursively; <clip>.txt or <clip>.<ext>.txt beside one is "
        "its transcript) "
        "or a dataset folder (label.csv or a CMU segment file, any layout `selfmm extract` reads)",
    )
    p.add_argument("--model", required=True, type=Path, help="a model bundle, or models/<dataset>/champion")
    p.add_argument("--text", default="", help="the transcript of a single media file (empty: text unknown)")
    p.add_argument(
        "--subtitles",
        type=Path,
        default=None,
        help="an SRT or WebVTT file of a single media file: one prediction per cue, written as timeline.csv, "
        "timeline.png and timeline.html in --out (default: <media name>.timeline/)",
    )
    p.add_argument("--seed", type=int, default=None, help="which seed's model (default: the bundle's selected)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="predictions.csv to write, one row per clip (default: predictions.csv for a folder; none for a file); "
        "with --subtitles, the folder of the timeline files",
    )
    p.set_defaults(handler=_predict)

    p = sub.add_parser(
        "serve-model",
        parents=[params],
        help="an HTTP prediction service that follows a champion (or serves a bundle); params serve.model",
    )
    p.add_argument("--model", required=True, type=Path, help="models/<dataset>/champion, or a model bundle")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(handler=_serve_model)

    p = sub.add_parser("import-mmsa", help="MMSA pickle (unaligned_50.pkl, ...) -> feature store")
    p.add_argument("pickle", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dataset", default="", help="dataset name recorded in the store")
    p.add_argument("--text-model", default=None, help="tokenizer the pickle's token ids came from")
    p.set_defaults(handler=_import_mmsa)

    p = sub.add_parser("export-mmsa", help="feature store -> MMSA-compatible pickle")
    p.add_argument("store", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(handler=_export_mmsa)

    p = sub.add_parser("serve", help="a local Prefect server and every deployment (<flow>/<dataset>) of params.yaml")
    p.add_argument(
        "--port", type=int, default=None, help="the server's port on 127.0.0.1 (default: params serve.port, else 4200)"
    )
    p.set_defaults(handler=_serve)

    p = sub.add_parser("server", help="the local Prefect server flow commands start on first use and share")
    p.add_argument("action", choices=["stop"], help="stop: end the server this project's commands left running")
    p.set_defaults(handler=_server)

    p = sub.add_parser("retrain", help="retrain a dataset through DVC if its annotations changed; promote if better")
    p.add_argument("dataset", help="a dataset of params serve.datasets (data/<dataset>/)")
    p.add_argument("--force", action="store_true", help="retrain even if the annotations did not change")
    p.set_defaults(handler=_retrain)

    p = sub.add_parser("rollback", help="point a dataset's champion back at a kept release (the previous one)")
    p.add_argument("dataset", help="a dataset with a champion (models/<dataset>/)")
    p.add_argument(
        "--to",
        default=None,
        metavar="RELEASE",
        help="the release id (models/<dataset>/releases/<id>) to make champion (default: the one that "
        "was champion before the current one)",
    )
    p.set_defaults(handler=_rollback)

    p = sub.add_parser("info", parents=[as_json], help="summarise a feature store, or a model bundle and its card")
    p.add_argument("store", type=Path, metavar="PATH", help="a feature store (.h5) or a model bundle folder")
    p.set_defaults(handler=_info)
    return parser


def _extract(args: argparse.Namespace) -> int:
    from flows.params import TaskRunnerKind, load_params, parse_overrides

    params = load_params(args.params)  # checked in full by _check_inputs
    overrides = parse_overrides(args.overrides)
    run = _run_config(params, args)

    from flows.extract import feature_extract, make_task_runner

    flow = feature_extract.with_options(task_runner=make_task_runner(run))
    summary = flow(
        data=args.dataset,
        out=str(args.out),
        overrides=overrides,
        params_file=args.params,
        cache_dir=args.cache_dir,
        progress=sys.stderr.isatty(),
        processes=run.workers if run.task_runner == TaskRunnerKind.PROCESSES else 0,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _run_config(params: Params, args: argparse.Namespace) -> RunConfig:
    """params ``run`` with the command line's options in place of its settings."""
    given = {"workers": args.workers, "task_runner": args.task_runner, "dask_address": args.dask_address}
    return params.run.updated({k: v for k, v in given.items() if v is not None})


def _demo_corpus(args: argparse.Namespace) -> int:
    from features.datasets.demo.corpus import make_demo_corpus

    out = make_demo_corpus(args.out, clips=args.clips, seed=args.seed, workers=args.workers, overwrite=args.overwrite)
    print(f"demo corpus: {out} ({args.clips} clips, seed {args.seed})")
    return 0


def _prepare_numerics(args: argparse.Namespace) -> None:
    """Portable numerics only take effect when set before torch loads: read the training config that decides
    them (the params section for ``train``, checked in full; the bundle's for ``evaluate`` and ``predict``)
    before anything else."""
    from selfmm.numerics import prepare_process

    if args.command == "train":
        from flows.params import load_params

        config = load_params(args.params).train_config(args.section, _train_overrides(args)).to_dict()
    elif args.command in ("evaluate", "predict", "serve-model") and (args.model / "bundle.json").is_file():
        config = json.loads((args.model / "bundle.json").read_text()).get("config", {})
    else:
        return
    prepare_process(config.get("numerics", "fast"), config.get("threads"))


def _train_overrides(args: argparse.Namespace) -> dict:
    from flows.params import parse_overrides

    overrides = parse_overrides(args.overrides)
    for key, value in (("preset", args.preset), ("seeds", args.seeds), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    return overrides


def _train(args: argparse.Namespace) -> int:
    from flows.train import train_flow

    summary = train_flow(
        features=str(args.features),
        out=str(args.out),
        overrides=_train_overrides(args),
        params_file=args.params,
        section=args.section,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from features.store import FeatureStore
    from flows.cli_text import evaluation_text

    if args.report:
        from flows.train import evaluate_flow

        result = evaluate_flow(
            model=str(args.model),
            features=str(args.features),
            report_dir=str(args.report),
            split=args.split,
            device=args.device,
        )
    else:
        from selfmm.predict import evaluate

        result = evaluate(args.model, args.features, args.split, args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    with FeatureStore(args.features) as store:
        dataset = store.dataset.lower()
    print(evaluation_text(result, args.split, dataset))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from features.cache import ShardCache
    from flows.params import load_params
    from selfmm.batch import SCORE_NAMES, predict_path, text_summary, write_predictions
    from selfmm.bundle import load_bundle

    params = load_params(args.params)
    if args.subtitles is not None:
        return _predict_timeline(args, params)
    bundle = load_bundle(args.model.resolve())  # a champion link resolved once: one release for every clip
    cache = ShardCache(args.cache_dir or params.run.cache_dir)
    rows, result = predict_path(bundle, args.media, cache, args.text, args.seed)
    if result["caution"]:
        print(f"selfmm predict: {result['caution']}", file=sys.stderr)
    out = args.out or (None if args.media.is_file() else Path("predictions.csv"))
    if out is not None:
        write_predictions(out, rows)
    if not args.media.is_file():
        print(text_summary(rows), file=sys.stderr)
        print(json.dumps({**result, "predictions": str(out)}, indent=2))
        return 0
    row = rows[0]
    if row.error:
        raise PipelineError(f"{args.media}: {row.error}")
    single = {
        "media": str(args.media),
        "transcript": args.text,
        "text_source": row.text_source,
        **{name: getattr(row, name) for name in SCORE_NAMES.values()},
        "face_frames": row.face_frames,
        "caution": result["caution"],
    }
    if args.json:
        print(json.dumps(single, indent=2))
    else:
        from flows.cli_text import prediction_text

        print(prediction_text(args.media, row))
    return 0


def _predict_timeline(args: argparse.Namespace, params: Params) -> int:
    from features.cache import ShardCache
    from flows.cli_text import decoding_progress, timeline_text
    from selfmm.batch import extraction_config
    from selfmm.bundle import load_bundle
    from selfmm.predict import Predictor
    from selfmm.timeline import read_subtitles, timeline_of, write_timeline

    if not args.media.is_file():
        raise ConfigError(f"{args.media}: --subtitles goes with one media file, not a folder")
    read_subtitles(args.subtitles)  # a bad subtitles file is refused before the model loads
    bundle = load_bundle(args.model.resolve())
    cache = ShardCache(args.cache_dir or params.run.cache_dir)
    predictor, config = Predictor(bundle, args.seed), extraction_config(bundle)
    with decoding_progress(args.media) as progress:
        segments, caution = timeline_of(
            predictor, args.media, args.subtitles, params.predict.min_segment_s, config, cache, progress
        )
    if caution:
        print(f"selfmm predict: {caution}", file=sys.stderr)
    out = args.out or Path(f"{args.media.name}.timeline")
    paths = write_timeline(out, segments, f"{args.media.name}: sentiment over time")
    if args.json:
        result = {"media": str(args.media), "subtitles": str(args.subtitles), "segments": len(segments)}
        failed = sum(1 for s in segments if s.error)
        print(json.dumps({**result, "failed": failed, **{k: str(v) for k, v in paths.items()}, "caution": caution}))
    else:
        print(timeline_text(args.media, segments, paths))
    return 0


def _serve_model(args: argparse.Namespace) -> int:
    from flows.params import load_params
    from selfmm.model_service import ServiceSettings, serve_model

    params = load_params(args.params)
    limits = params.serve.model
    settings = ServiceSettings(
        max_upload_bytes=int(limits.max_upload_mb * 2**20),
        max_concurrent=limits.max_concurrent or os.cpu_count() or 1,
        max_waiting=limits.max_waiting,
        max_video_s=limits.max_video_s,
        min_segment_s=params.predict.min_segment_s,
    )
    serve_model(args.model, settings, args.host, args.port)
    return 0


def _import_mmsa(args: argparse.Namespace) -> int:
    from features.mmsa import import_mmsa

    out = import_mmsa(args.pickle, args.out, dataset=args.dataset, text_model=args.text_model)
    print(f"imported {args.pickle} -> {out}")
    return 0


def _export_mmsa(args: argparse.Namespace) -> int:
    from features.mmsa import export_mmsa

    out = export_mmsa(args.store, args.out)
    print(f"exported {args.store} -> {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flows.deployment_runner import serve

    serve(args.port)
    return 0


def _server(args: argparse.Namespace) -> int:
    from flows.local_server import stop_local_server

    home = Path(os.environ["PREFECT_HOME"])  # apply_defaults sets it
    print(f"selfmm server: {'stopped' if stop_local_server(home) else 'none running'} ({home})")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from flows.deployments import served_datasets
    from flows.params import load_params
    from flows.retrain import retrain

    served = {d.name: d for d in served_datasets(load_params())}
    if args.dataset not in served:
        raise ConfigError(f"dataset {args.dataset!r} is not in params serve.datasets ({', '.join(served)})")
    record = retrain(dataset=args.dataset, force=args.force)
    print(json.dumps(record, indent=2))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from flows.releases import rollback

    print(json.dumps(rollback(args.dataset, to=args.to), indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    if (args.store / "bundle.json").is_file():
        return _bundle_info(args)
    from features.store import FeatureStore

    with FeatureStore(args.store) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from flows.cli_text import store_text

    print(store_text(info))
    return 0


def _bundle_info(args: argparse.Namespace) -> int:
    from selfmm.bundle import load_bundle

    bundle = load_bundle(args.store)
    if args.json:
        print(json.dumps(bundle.summary(), indent=2))
        return 0
    from flows.cli_text import bundle_text

    print(bundle_text(bundle))
    return 0


if __name__ == "__main__":
    console()

"""What checking a bundle against its manifest costs, beside what loading it costs anyway.

Copies the bundle (the demo bundle is ~275 MB) to a temporary folder, seals the copy if it has no manifest (a
format-1 bundle), and times ``verify_bundle``: with the files in the page cache, with them dropped from it (read
from disk, as on a fresh start), and with the digests this process already made (a file whose size and mtime are
unchanged is not read again); then the whole load the model service does on a switch (verify, bundle, network,
tokenizer), with and without those digests. Each uncached run first moves every file's mtime, which is what makes
the digests miss.

    python -m benchmarks.bench_bundle_verify --model build/demo/model [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from features import portable_math
from selfmm.bundle import MANIFEST_FILE, verify_bundle, write_manifest
from selfmm.model_service import LoadedModel


def files_of(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def miss_digests(path: Path, step: int) -> None:
    """Give every file a new mtime (10 s old, so the digests made now are kept): the next check reads them all."""
    when = time.time_ns() - 10 * 10**9 + step
    for file in files_of(path):
        os.utime(file, ns=(when, when))


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget these files' pages (this copy's only): the next read comes from disk."""
    for file in files_of(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def seconds(fn: Callable[[], object], before: Callable[[int], None], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, ``before(i)`` run untimed ahead of each."""
    times = []
    for i in range(repeat):
        before(i)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    portable_math.reexec()  # as `selfmm serve-model` does: the service's load checks the extractors' float maths
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a bundle folder (copied, never changed)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as tmp:
        bundle = Path(shutil.copytree(args.model.resolve(), Path(tmp) / "model"))
        sealed = not (bundle / MANIFEST_FILE).is_file()
        start = time.perf_counter()
        if sealed:
            write_manifest(bundle)
        seal_s = time.perf_counter() - start
        files = files_of(bundle)  # the manifest among them
        size = sum(f.stat().st_size for f in files)

        def verify() -> None:
            assert verify_bundle(bundle)

        def load() -> None:
            LoadedModel.load(bundle)

        def cold(i: int) -> None:
            miss_digests(bundle, i)
            drop_page_cache(bundle)

        warm_s = seconds(verify, lambda i: miss_digests(bundle, 100 + i), args.repeat)
        cold_s = seconds(verify, cold, args.repeat)
        cached_s = seconds(verify, lambda i: None, args.repeat)
        load_uncached_s = seconds(load, lambda i: miss_digests(bundle, 200 + i), args.repeat)
        load_cached_s = seconds(load, lambda i: None, args.repeat)
    print(
        json.dumps(
            {
                "model": str(args.model),
                "bytes": size,
                "files": len(files),
                "sealed_here_s": round(seal_s, 3) if sealed else None,
                "verify_page_cache_s": round(warm_s, 3),
                "verify_from_disk_s": round(cold_s, 3),
                "verify_digests_known_s": round(cached_s, 4),
                "verify_MB_per_s": round(size / 2**20 / warm_s),
                "service_load_s": round(load_uncached_s, 3),
                "service_load_digests_known_s": round(load_cached_s, 3),
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

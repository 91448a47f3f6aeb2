"""No start-up tax: a command loads only what it uses. ``selfmm --help`` loads no library at all, and the extract
command's code (the CLI, the flow, the tokenizer, every shard key) loads neither torch, transformers, MediaPipe,
matplotlib nor the training code, which cost seconds of every ``selfmm extract`` before they were kept out."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

from tests.support.data import REPO

TRAINING = {"torch", "transformers", "matplotlib", "mediapipe", "selfmm.trainer", "selfmm.model"}
HELP = """
from flows.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
"""
EXTRACT = """
from flows.cli import _extract, main
from flows.extract import feature_extract
from features.config import ExtractConfig, Modality
from features.extract import Extractors

extractors = Extractors(ExtractConfig())
keys = [extractors.key(modality) for modality in Modality]
ids, mask = extractors.text.tokenize("it is a bad movie")
assert len(ids) == len(mask) > 2
_ = extractors.audio
"""
LOADED = """
import json, sys
print(json.dumps(sorted({m for m in sys.modules} | {m.split(".")[0] for m in sys.modules})))
"""


def loaded_by(script: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", script + LOADED], cwd=REPO, env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_help_loads_no_library():
    loaded = loaded_by(HELP)
    assert not loaded & (TRAINING | {"prefect", "opensmile", "pandas", "h5py", "numpy"})
    assert "flows.cli" in loaded


CACHED = """
from flows.params import load_params
from features.config import Modality
from features.extract import Extractors

extractors = Extractors(load_params().extract_config())
keys = [extractors.key(modality) for modality in (Modality.AUDIO, Modality.VISION)]
"""


def test_configs_and_shard_keys_load_no_extractor_library():
    """What a fully cached extraction and the trainer read (params, configs, cache keys) needs no openSMILE,
    MediaPipe or PyAV decoding library beyond its version."""
    loaded = loaded_by(CACHED)
    assert not loaded & (TRAINING | {"opensmile", "audobject", "pandas"})


def test_the_extract_command_loads_no_training_library():
    loaded = loaded_by(EXTRACT)
    assert not loaded & TRAINING
    assert {"prefect", "opensmile", "tokenizers"} <= loaded  # what it does use


CONSOLE = """
import atexit, sys
import flows.cli as cli

def main():
    atexit.register(print, "drained")  # as Prefect registers its log and event drains during a flow run
    print("result", end="")  # left in stdout's buffer
    return 3

cli.main = main if sys.argv[1:] == ["fake"] else cli.main
sys.argv = ["selfmm", *sys.argv[1:]]
cli.console()
"""


def test_the_console_script_skips_only_the_teardown(tmp_path):
    """``console`` ends with os._exit after every exit handler: the status, piped output and handlers survive."""

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {"PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-c", CONSOLE, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    fake = run("fake")
    assert (fake.returncode, fake.stdout) == (3, "resultdrained\n")
    missing = run("info", "missing.h5")
    assert missing.returncode == 1 and "missing.h5" in missing.stderr
    usage = run()
    assert usage.returncode == 2 and usage.stdout.startswith("usage: selfmm")


def test_only_the_training_commands_restart_on_tcmalloc_and_only_where_it_is_installed(monkeypatch):
    from flows.cli import training_allocator

    monkeypatch.setenv("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", "1")  # training_allocator sets it where unset
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.4")
    assert training_allocator(["--debug", "train", "--features", "f.h5"]) == ("libtcmalloc_minimal.so.4",)
    assert training_allocator(["retrain", "mosi"]) == ("libtcmalloc_minimal.so.4",)
    assert training_allocator(["extract", "--dataset", "train"]) == ()
    assert training_allocator([]) == ()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert training_allocator(["train"]) == ()

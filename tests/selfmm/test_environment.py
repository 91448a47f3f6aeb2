"""features and selfmm are libraries: importing them, or training, sets no environment variable (process-wide
defaults belong to the CLI, flows/settings.py), and they never go to a model hub unless told to."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.support.data import REPO

SCRIPT = """
import ast, importlib, json, os, pkgutil, sys
from pathlib import Path

# Third-party packages may set variables when imported (OpenCV, for one, does): import what our modules import
# first, so that what is compared is what our own code does.
for source in [*Path("features").rglob("*.py"), *Path("selfmm").rglob("*.py")]:
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Import):
            imported = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module != "__future__":
            imported = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for name, attribute in imported:
            if name.split(".")[0] not in ("features", "selfmm"):
                module = importlib.import_module(name)
                if attribute and not hasattr(module, attribute):
                    importlib.import_module(f"{name}.{attribute}")

before = dict(os.environ)
import features, selfmm
for package in (features, selfmm):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
after_import = dict(os.environ)

from selfmm.config import TrainConfig
from selfmm.trainer import train
from tests.support.synthetic import make_synthetic_store, make_text_model

root = Path(sys.argv[1])
text_model = str(make_text_model(root / "bert"))
store = make_synthetic_store(root / "store.h5", text_model, sizes={"train": 16, "valid": 8, "test": 8})
after_setup = dict(os.environ)
config = TrainConfig(text_model=text_model, seeds=[1], batch_size=8, max_epochs=1, deterministic=True, device="cpu")
train(store, root / "model", config)
print(json.dumps({"before": before, "after_import": after_import, "after_setup": after_setup,
                  "after_train": dict(os.environ)}))
"""

LIBRARY_DEFAULTS = ("HF_HUB_OFFLINE", "CUBLAS_WORKSPACE_CONFIG", "TOKENIZERS_PARALLELISM")


def test_importing_features_and_selfmm_and_training_leave_the_environment_unchanged(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_DEFAULTS}  # what a library user may not have set
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after_import"] == seen["before"]
    assert seen["after_train"] == seen["after_setup"]
    assert not set(LIBRARY_DEFAULTS) & set(seen["after_train"])


HUB_SCRIPT = """
from features.config import TextConfig
from features.extractors.text import TextTokenizer
from selfmm.text_encoder import load_text_encoder

for load in (lambda: TextTokenizer(TextConfig(model="no-such-org/no-such-bert")),
             lambda: load_text_encoder("no-such-org/no-such-bert")):
    try:
        load()
    except ValueError as err:
        assert "not available offline" in str(err), err
    else:
        raise AssertionError("loaded a model that is nowhere on this machine")
"""


def test_library_users_never_wait_on_the_model_hub(tmp_path):
    """Without HF_HUB_OFFLINE in the environment, a model that is not on this machine fails at once: nothing
    connects to the hub (here a local socket that would record the connection)."""
    with socket.create_server(("127.0.0.1", 0)) as hub:
        env = {k: v for k, v in os.environ.items() if k not in LIBRARY_DEFAULTS}
        env.update(
            PYTHONPATH=str(REPO), HF_ENDPOINT=f"http://127.0.0.1:{hub.getsockname()[1]}", HF_HOME=str(tmp_path / "hf")
        )
        done = subprocess.run(
            [sys.executable, "-c", HUB_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )  # a load that waits on the hub hangs here
        assert done.returncode == 0, done.stderr[-3000:]
        hub.setblocking(False)
        with pytest.raises(BlockingIOError):
            hub.accept()

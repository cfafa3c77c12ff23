#!/usr/bin/env bash
# The GPU check, one command on a bare lent GPU machine (run from the repository root, with
# bench/gpu/pack/ beside it, made by bench/gpu/pack.sh):
#
#   bash bench/gpu/check.sh          # GPU: Qwen2.5-0.5B-shaped model, bf16, NCCL, seq 512
#   bash bench/gpu/check.sh --cpu    # here: the same script with a tiny model, fp32, gloo
#
# It unpacks the pack into a target folder (Ray from its tar.xz; each carried wheel only when
# the machine's python3 lacks that distribution), then runs bench/gpu/check.py: Ray Train +
# DeepSpeed ZeRO-2/3 x full/LoRA through biogner's own training path, the ZeRO-3 export
# round-trip, and batched generation with biogner's Generator. Results go to $OUT (the device
# tool's output folder) or bench/results/: gpu_check.json and gpu_check.md (cpu_check.* with
# --cpu). Extra arguments are passed to check.py (see `python -m bench.gpu.check --help`); it
# runs as the module bench.gpu.check from the repository root, which puts the root (the bench
# package) first on sys.path, so PYTHONPATH names only the unpacked site and platform/.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACK=${BIOGNER_GPU_PACK:-bench/gpu/pack}
SITE=${BIOGNER_GPU_SITE:-/tmp/biogner-gpu-site}
RESULTS=${OUT:-bench/results}
cpu=0
for arg in "$@"; do [ "$arg" = "--cpu" ] && cpu=1; done
if [ $cpu = 1 ] && [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
t0=$(date +%s)

[ -f "$PACK/MANIFEST.txt" ] || { echo "no pack at $PACK: run bench/gpu/pack.sh first" >&2; exit 2; }
rm -rf "$SITE"
mkdir -p "$SITE" "$RESULTS"
echo "== unpacking $PACK into $SITE"
tar -xJf "$PACK"/ray-*-cp312.tar.xz -C "$SITE"
if [ $cpu = 1 ]; then
  # This machine's Python is not the GPU's 3.12: install every carried wheel for cp312 (which
  # proves the pack complete and installable) but run on this environment's own packages.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --platform manylinux_2_31_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "$PACK"/wheels/*.whl
  echo "   pack installed for cp312 ($(du -sh "$SITE" | cut -f1)); the CPU run uses $PY's packages"
  export PYTHONPATH="platform${PYTHONPATH:+:$PYTHONPATH}"
else
  missing=$("$PY" - "$PACK"/wheels/*.whl <<'EOF'
import importlib.metadata, sys
from pathlib import Path
for wheel in sys.argv[1:]:
    name = Path(wheel).name.split("-")[0]
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" $missing
  fi
  echo "   installed: $(echo "$missing" | xargs -n1 basename 2>/dev/null | cut -d- -f1 | tr '\n' ' ')"
  export PYTHONPATH="$SITE:platform${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "   $(( $(date +%s) - t0 )) s"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
export RAY_AUTH_MODE=disabled RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2
[ $cpu = 1 ] && export DS_ACCELERATOR=cpu
if [ -d "$PACK/data" ] && [ -z "${BIOGNER_DATA_DIR:-}" ] && [ $cpu = 0 ]; then
  export BIOGNER_DATA_DIR="$PWD/$PACK/data"
fi
export BIOGNER_HOME=${BIOGNER_HOME:-/tmp/biogner-gpu-check}
exec "$PY" -m bench.gpu.check --out "$RESULTS" "$@"

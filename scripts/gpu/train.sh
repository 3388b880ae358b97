#!/usr/bin/env bash
# The GPU training run, on the device machine (scripts/gpu/README.md says how the data gets there).
#   bash scripts/gpu/train.sh [EPOCHS] [IMAGE_SIZE]
# Whole backbone (frozen_stages 0), views made afresh every epoch, 320 px, resumable after every
# epoch: the same command continues a run cut short. Writes $OUT/gpu.pt (10 MB) and the log; export
# ONNX back on the CPU machine (the export carries 20 MB, over the 16 MiB a file may come back with).
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS=${1:-30}
SIZE=${2:-320}
OUT=${OUT:-runs/gpu/out}
PY=${PYTHON:-python3}  # the device machine's python3 holds PyTorch, timm, ONNX and pandas
mkdir -p "$OUT" runs/gpu/data
for pack in runs/gpu/pack-*.tar; do [ -e "$pack" ] && tar -xf "$pack" -C runs/gpu; done
"$PY" -m pip install -q --no-deps --no-index runs/gpu/wheels/*.whl 2>/dev/null || true
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -m whales_identify -v train --data-root runs/gpu/data --out "$OUT/gpu.pt" \
    --frozen-stages 0 --model-image-size "$SIZE" --model-crop-to-animal true --epochs "$EPOCHS" \
    --batch-size "${BATCH:-64}" --lr 1e-3 --workers "$(( $(nproc) - 2 ))" --device "${DEVICE:-cuda}" ${LIMIT:+--limit "$LIMIT"} 2>&1 | tee "$OUT/train.log"
ls -la "$OUT"

#!/usr/bin/env bash
# Microscopy pretraining on a lent GPU, in two calls that each fit the device tool's 64 MiB tree:
#
#   python scripts/pack_gpu_data.py pretrain .gpu/pre && benchmarks/gpu_pretraining.sh pretrain   # carry .gpu/pre
#   python scripts/pack_gpu_data.py labelled .gpu/lab && benchmarks/gpu_pretraining.sh finetune   # carry .gpu/lab
#
# pretrain: `csunet pretrain` of micro-tiny (csunet-tiny, fp16) on the corpus + NASA train/val images
#           for PRETRAIN_S seconds.
# finetune: the starter models fine-tuned from micro-tiny (recipes starter-*), their test metrics,
#           and benchmarks/pretraining.py (random vs micro-tiny vs adapted), all at once on one GPU.
# Results go to $OUT (or ./gpu-out): models, JSON-lines events, JSON summaries. Runs on a CPU too
# with DRY=1 (a few steps each), which is how it is tested before a device is lent.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: gpu_pretraining.sh pretrain|finetune}
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
LOG=$(mktemp -d)  # logs travel back as one archive: the device returns at most 8 files
trap 'tar -czf "$OUT/logs-$phase.tar.gz" -C "$LOG" .' EXIT
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # the device image lacks some of our pins
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/training${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export CSUNET_MODELS_DIR=$PWD/.gpu/models
csunet() { $PY -c 'import sys; from napari_csunet.cli.main import main; sys.exit(main())' "$@"; }
MICRO=src/napari_csunet/starter_models/micro-tiny.safetensors
dry=${DRY:-0}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$LOG/device.txt"

if [ "$phase" = pretrain ]; then
  budget=${PRETRAIN_S:-240}; steps=1000000; extra=()
  [ "$dry" = 1 ] && { budget=60; steps=4; extra=(--batch-size 2 --eval-every 2 --num-workers 0); }
  csunet pretrain .gpu/pre/corpus .gpu/pre/nasa --out "$OUT/micro-tiny.safetensors" --preset csunet-tiny \
    --time-budget "$budget" --steps "$steps" --batch-size 64 --lr 1e-3 --eval-every 500 --num-workers 12 \
    --half --name micro-tiny "${extra[@]}" --json-events > "$OUT/pretrain.jsonl" 2> "$LOG/pretrain.err"
  rc=$?; mkdir -p .gpu && cp "$OUT/micro-tiny.safetensors" .gpu/micro-tiny.safetensors
  cp "$OUT/micro-tiny.safetensors" /tmp/micro-tiny.safetensors
  tail -3 "$OUT/pretrain.jsonl"; tail -3 "$LOG/pretrain.err"; exit $rc
fi

# finetune: micro-tiny from the last call (kept on a warm machine) or carried in .gpu/
cp .gpu/micro-tiny.safetensors "$MICRO" 2>/dev/null || cp /tmp/micro-tiny.safetensors "$MICRO" || exit 1
steps=300; adapt=300; jobs=${JOBS:-8}; over=()
[ "$dry" = 1 ] && { steps=2; adapt=2; jobs=2; over=(--steps 3 --eval-every 3 --num-workers 0 --batch-size 2); }
for name in superalloy ebc; do
  csunet train --recipe "starter-$name" --data-root .gpu/lab --out "$OUT/starter-$name.safetensors" \
    "${over[@]}" --json-events > "$LOG/starter-$name.jsonl" 2> "$LOG/starter-$name.err" &
done
$PY benchmarks/pretraining.py --data .gpu/lab --pretrained "$MICRO" --steps $steps --adapt-steps $adapt \
  --jobs "$jobs" ${PROTOCOLS:+--protocols "$PROTOCOLS"} --results "$LOG/pretraining-runs.jsonl" --json > "$OUT/pretraining.json" 2> "$LOG/pretraining.err"
echo "pretraining benchmark: rc $?"
wait
for name in superalloy:Super1 ebc:EBC2; do
  csunet evaluate --model "$OUT/starter-${name%%:*}.safetensors" --data ".gpu/lab/${name#*:}" --split test --json \
    > "$LOG/starter-${name%%:*}-test.json" 2>> "$LOG/starter-${name%%:*}.err"
  cp "$LOG/starter-${name%%:*}-test.json" "$OUT/"
done
[ "$dry" = 1 ] && rm -f "$MICRO"  # a dry run leaves no model in the package
tail -c 600 "$OUT/pretraining.json"; for f in "$LOG"/starter-*.jsonl "$LOG"/*.err; do tail -n 3 "$f"; done

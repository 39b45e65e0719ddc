#!/usr/bin/env bash
# Inference and fine-tuning numbers on one lent GPU (H100/H200), in one call of under 8 minutes:
#
#   python scripts/pack_gpu_data.py labelled .gpu/lab && benchmarks/gpu.sh          # carry .gpu/lab
#   benchmarks/gpu.sh --dry-run                                                     # CPU, tiny sizes
#
# 1. benchmarks/inference.py at 4096^2 for csunet-r50-swint (eager, then torch.compile) and
#    csunet-tiny: bf16 autocast, channels-last, tile and batch chosen by the engine from GPU memory.
# 2. benchmarks/training_budget.py: micro-tiny fine-tuned on EBC2's 4 training images (the starter-ebc
#    recipe) until validation stops improving (patience) or FT_BUDGET_S (120) runs out; test metrics.
# Timeouts: 120 s per inference run, 180 s for the compiled one, fine-tune budget + 90 s; typical
# total about 7 minutes.
# Writes $OUT/gpu.json (one JSON object; $OUT defaults to ./gpu-out) and logs/*.err beside it.
# Each step has its own timeout; a failed step is recorded as {"error": ...} and the rest still run.
# --dry-run: the same steps with csunet-tiny in place of csunet-r50-swint, 256^2 images, no seam
# check, one timing round, 120 s for torch.compile, a few steps on 256^2 crops of EBC2, on whatever
# device there is (how the script is tested on a CPU before a GPU is lent).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0; [ "${1:-}" = "--dry-run" ] && dry=1
OUT=${OUT:-gpu-out}; mkdir -p "$OUT/logs"
PY=${PYTHON:-.venv/bin/python}; [ -x "$PY" ] || PY=python3
export PYTHONPATH=$PWD/src:$PWD/training${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export CSUNET_MODELS_DIR=$PWD/.gpu/models
DATA=${DATA:-.gpu/lab}; [ -d "$DATA/EBC2" ] || DATA=../shared/data/nasa
start=$(date +%s)
size=4096; repeats=3; ft_budget=${FT_BUDGET_S:-120}; ft=(--eval-every 50); t_inf=120; t_compile=180
big=csunet-r50-swint; seam=()
if [ "$dry" = 1 ]; then
  size=256; repeats=1; ft_budget=60; t_inf=600; t_compile=120; big=csunet-tiny; seam=(--no-seam)
  ft=(--eval-every 2 --max-steps 4 --batch-size 2 --num-workers 0)
  mini=$(mktemp -d); $PY - "$DATA/EBC2" "$mini/EBC2" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from napari_csunet.images.reading import read_image
import tifffile
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for f in sorted(src.glob("*/*")):  # NASA's layout, each image and mask cropped to 256^2
    if f.suffix.lower() in (".tif", ".tiff", ".png"):
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(dst / f.parent.name / (f.stem + ".tif"), np.ascontiguousarray(read_image(f)[:256, :256]))
PYEOF
  DATA=$mini
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/logs/device.txt" 2>/dev/null

bench() {  # name, timeout, benchmark arguments...
  local name=$1 limit=$2; shift 2
  timeout "$limit" $PY benchmarks/inference.py --size "$size" --repeats "$repeats" --json "$@" \
    > "$OUT/logs/$name.json" 2> "$OUT/logs/$name.err"
  echo "$name: rc $? after $(( $(date +%s) - start )) s" >&2
}
bench r50-swint "$t_inf" --model "$big" --no-seam
bench r50-swint-compiled "$t_compile" --model "$big" --no-seam --compile
bench tiny "$t_inf" --model csunet-tiny "${seam[@]}"  # the seam check uses the shipped starter model

recipe=$(mktemp -d)/ebc2-4shot.yaml  # starter-ebc (EBC2's 4 training images), stopping at a plateau
$PY - "$recipe" <<'PYEOF'
import sys
import yaml
from csunet_train.config import RECIPE_DIR
r = yaml.safe_load((RECIPE_DIR / "starter-ebc.yaml").read_text())
r.update(name="ebc2-4shot", patience=4, out=None)
open(sys.argv[1], "w").write(yaml.safe_dump(r))
PYEOF
timeout $(( ft_budget + 90 )) $PY benchmarks/training_budget.py --recipe "$recipe" --data-root "$DATA" --budget-s "$ft_budget" \
  "${ft[@]}" --json > "$OUT/logs/finetune.json" 2> "$OUT/logs/finetune.err"
echo "finetune: rc $? after $(( $(date +%s) - start )) s" >&2

$PY - "$OUT" "$dry" "$start" <<'PYEOF'
import json, sys, time
from pathlib import Path
out, dry, start = Path(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
def part(name):
    f, err = out / "logs" / f"{name}.json", out / "logs" / f"{name}.err"
    try:
        return json.loads(f.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {"error": (err.read_text()[-1500:] if err.exists() else "no output") or "no output"}
result = {"dry_run": dry, "device": (out / "logs" / "device.txt").read_text().strip() if (out / "logs" / "device.txt").exists() else "no nvidia-smi",
          "inference": {k: part(k) for k in ("r50-swint", "r50-swint-compiled", "tiny")}, "finetune_ebc2_4shot": part("finetune")}
eager, comp = result["inference"]["r50-swint"], result["inference"]["r50-swint-compiled"]
if "mpx_per_s" in eager and "mpx_per_s" in comp:
    result["compile_speedup"] = comp["mpx_per_s"] / eager["mpx_per_s"]
result["wall_s"] = round(time.time() - start, 1)
(out / "gpu.json").write_text(json.dumps(result) + "\n")
print(json.dumps(result))
PYEOF

#!/usr/bin/env bash
# The whole GPU measurement of issues 14 and 12 in ONE device call (under its 10-minute limit): results in $OUT.
#
# Here, once (no GPU needed; writes only the ignored .whl/ and .devdata/, about 43 MB):
#   bash ../shared/tools/device-prep.sh liver_ct_2d
# Device call (the tree is ~17 MB; tree + carry must stay under 64 MiB):
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl", ".devdata"], timeout_s=580)
# CPU dry run of every part with tiny sizes (what the device call runs, minus CUDA; a few minutes here):
#   DRY_RUN=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_run.sh
#
# Parts, in order, each under its own time limit (seconds; a slow part cannot eat the others' time) and never past
# $TOTAL_SECONDS (default 545) from the start:
#   setup      copies the code to /tmp/pyconv-src (long runs import from there, not from the carried tree); installs
#              .whl/*.whl offline into /tmp/site when MONAI is missing; env.log (GPU, driver, torch, CUDA, cuDNN,
#              MONAI, ONNX Runtime providers, TensorRT)
#   profile    torch.profiler top kernels of one training step: pyconvunet:ungrouped, pyconvunet, unet $T_PROFILE (40)
#   eager      benchmarks/throughput.py, every model eager: train (batch 16) + infer (batch 16)     $T_EAGER (90)
#   compiled   the same, torch.compile'd: unet, pyconvunet:ungrouped, pyconvunet:dense              $T_COMPILED (120)
#   infer1     inference at batch 1, eager and compiled: unet, the best eager PyConv mode            $T_INFER1 (50)
#   epochs     benchmarks/bundle_epochs.py: liver bundle's own training (batch 5, 512x512, AMP), 3 epochs
#              each of unet, pyconvunet in its fastest eager mode (from the eager table) and the
#              reference                                                                               $T_EPOCHS (100)
#   fasttests  CUDA tests of the cuDNN fast modes (tests/networks/test_fast_pyconv.py -k cuda), if time is left
# Model lists: MODELS_EAGER, MODELS_COMPILED, PROFILE_MODELS (comma-separated name[:mode]); limits: T_<PART>.
# Files in $OUT (the device returns at most 8): summary.log (env + each part's status and time), profile.md, throughput.md (eager and compiled tables), infer1.md, epochs.md, raw.tar.gz (every log and JSON).
set -uo pipefail
start=$SECONDS
DRY=${DRY_RUN:-0}
OUT=${OUT:-/tmp/pyconv-gpu}
TOTAL_SECONDS=${TOTAL_SECONDS:-545}
RAW=/tmp/pyconv-raw
repo=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:-/tmp/pyconv-src}
mkdir -p "$OUT" "$RAW"
export PYTHONUNBUFFERED=1
summary=$OUT/summary.log
: >"$summary"
log() { echo "[$((SECONDS - start)) s] $*" | tee -a "$summary"; }

# ---------------------------------------------------------------------------------------------------- setup
PY=${PYTHON:-python3}
if [ "$DRY" = 1 ] && [ -x "$repo/.venv/bin/python" ]; then PY=$repo/.venv/bin/python; fi
rm -rf "$SRC" && mkdir -p "$SRC"
cp -r "$repo/pyconv_monai" "$repo/benchmarks" "$repo/tests" "$SRC/"
mkdir -p "$SRC/bundles" "$SRC/data"
for b in "$repo"/bundles/*/; do
  [ -d "$b/configs" ] && mkdir -p "$SRC/bundles/$(basename "$b")" && cp -r "$b/configs" "$SRC/bundles/$(basename "$b")/"
done
cp -r "$repo/data/isbi2012_em" "$SRC/data/" 2>/dev/null || true
cp "$repo"/setup.cfg "$repo"/pyproject.toml "$SRC/" 2>/dev/null || true
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
if ! "$PY" -c "import monai" 2>/dev/null; then
  if ! ls "$repo"/.whl/*.whl >/dev/null 2>&1; then
    log "no .whl/*.whl: run 'bash ../shared/tools/device-prep.sh liver_ct_2d' here and carry [\".whl\", \".devdata\"]"
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$repo"/.whl/*.whl \
    || { log "wheel install failed"; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
DATA=${LIVER_DIR:-$repo/.devdata/liver_ct_2d}
[ -d "$DATA" ] || DATA=$repo/../shared/data/liver_ct_2d
cd "$SRC"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" - <<'PY'
import importlib, torch, monai
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "MONAI",
      monai.__version__, "GPU", gpu)
for name in ("onnxruntime", "tensorrt", "torch_tensorrt"):
    try:
        m = importlib.import_module(name)
        extra = f" providers {m.get_available_providers()}" if name == "onnxruntime" else ""
        print(name, getattr(m, "__version__", "?") + extra)
    except Exception as e:  # noqa: BLE001
        print(name, "not available:", type(e).__name__, str(e)[:80])
PY
} >"$RAW/env.log" 2>&1
cat "$RAW/env.log" >>"$summary"
log "setup done (python $PY, data $DATA)"

left() { echo $((TOTAL_SECONDS - (SECONDS - start))); }
pack() { tar -czf "$OUT/raw.tar.gz.tmp" -C "$RAW" . 2>/dev/null && mv "$OUT/raw.tar.gz.tmp" "$OUT/raw.tar.gz"; }
# part NAME CAP COMMAND...: runs COMMAND with stdout+stderr in $RAW/NAME.log under min(CAP, time left - 5) seconds
part() {
  local name=$1 cap=$2 t0=$SECONDS limit
  shift 2
  limit=$(left)
  limit=$((limit - 5))
  [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -lt 15 ]; then
    log "$name: not run (no time left)"
    return 0
  fi
  log "$name: start (limit $limit s): $*"
  # SIGINT first: pytest then prints its failures, the benchmarks keep the rows they wrote after each model
  timeout -k 5 --signal=INT "$limit" "$@" >"$RAW/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "$name: stopped at its limit of $limit s" >>"$RAW/$name.log"
  log "$name: rc $rc in $((SECONDS - t0)) s"
  tail -3 "$RAW/$name.log" | sed "s/^/    $name| /" >>"$summary"
  pack
  return 0
}

if [ "$DRY" = 1 ]; then
  DEV=cpu
  SIZES=(--size 32 --batch-size 2 --infer-batch-size 2 --steps 1 --warmup 1 --repeats 1 --threads 2)
  PROFILE_ARGS=(--size 32 --batch-size 2 --warmup 1 --steps 1)
  EPOCH_ARGS=(--subset 4 --patch 64 --batch-size 2 --epochs 2)
  MODELS_EAGER=unet,pyconvunet,pyconvunet:dense
  MODELS_COMPILED=unet
  PROFILE_MODELS=unet,pyconvunet:dense
else
  DEV=cuda
  SIZES=(--size 512 --batch-size 16 --infer-batch-size 16 --steps 5 --warmup 2 --repeats 3)
  PROFILE_ARGS=(--size 512 --batch-size 16 --warmup 3 --steps 3)
  EPOCH_ARGS=(--epochs 3)
  MODELS_EAGER=${MODELS_EAGER:-unet,pyconvunet:ungrouped,pyconvunet,pyconvunet:dense}
  MODELS_COMPILED=${MODELS_COMPILED:-unet,pyconvunet:ungrouped,pyconvunet:dense}
  PROFILE_MODELS=${PROFILE_MODELS:-pyconvunet:ungrouped,pyconvunet,unet}
fi

# ---------------------------------------------------------------------------------------------------- parts
part profile "${T_PROFILE:-40}" "$PY" benchmarks/profile_step.py --device "$DEV" --models "$PROFILE_MODELS" \
  "${PROFILE_ARGS[@]}" --out "$OUT/profile.md"

part eager "${T_EAGER:-90}" "$PY" benchmarks/throughput.py --device "$DEV" --models "$MODELS_EAGER" --exec eager \
  --phases train,infer "${SIZES[@]}" --budget $(($(left) < ${T_EAGER:-90} ? $(left) - 20 : ${T_EAGER:-90} - 15)) \
  --json "$RAW/eager.json" --out "$RAW/eager.md"

# the fastest eager PyConv mode for training (failures: ungrouped, the fastest of the H200 run of 2026-11-28)
BEST=$("$PY" - "$RAW/eager.json" <<'PY'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["results"]
except Exception:  # noqa: BLE001
    print("ungrouped"); sys.exit()
rates = {r["model"].partition(":")[2] or "reference": r.get("train", {}).get("images_per_s", 0)
         for r in rows if r["model"].startswith("pyconvunet")}
print(max(rates, key=rates.get) if rates and max(rates.values()) > 0 else "ungrouped")
PY
)
CUDNN_BEST=$("$PY" - "$RAW/eager.json" <<'PY'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["results"]
except Exception:  # noqa: BLE001
    print("ungrouped"); sys.exit()
rates = {r["model"].partition(":")[2] or "reference": r.get("infer", {}).get("images_per_s", 0)
         for r in rows if r["model"].startswith("pyconvunet")}
print(max(rates, key=rates.get) if rates and max(rates.values()) > 0 else "ungrouped")
PY
)
log "fastest eager PyConv mode for training: $BEST; fastest cuDNN mode for inference: $CUDNN_BEST"

part compiled "${T_COMPILED:-120}" "$PY" benchmarks/throughput.py --device "$DEV" --models "$MODELS_COMPILED" \
  --exec compiled --phases train,infer "${SIZES[@]}" --timeout 75 \
  --budget $(($(left) < ${T_COMPILED:-120} ? $(left) - 20 : ${T_COMPILED:-120} - 10)) \
  --json "$RAW/compiled.json" --out "$RAW/compiled.md"
{
  echo "## Eager"
  echo
  cat "$RAW/eager.md" 2>/dev/null || echo "(no eager table: see eager.log)"
  echo
  echo "## Compiled"
  echo
  cat "$RAW/compiled.md" 2>/dev/null || echo "(no compiled table: see compiled.log)"
} >"$OUT/throughput.md"

INFER1_MODELS=unet,pyconvunet:$CUDNN_BEST
part infer1 "${T_INFER1:-50}" "$PY" benchmarks/throughput.py --device "$DEV" --models "$INFER1_MODELS" \
  --exec eager,compiled --phases infer "${SIZES[@]}" --infer-batch-size 1 --timeout 40 \
  --budget $(($(left) < ${T_INFER1:-50} ? $(left) - 20 : ${T_INFER1:-50} - 10)) \
  --json "$RAW/infer1.json" --out "$OUT/infer1.md"

EPOCH_MODELS=unet,pyconvunet:$BEST
[ "$BEST" != reference ] && EPOCH_MODELS=$EPOCH_MODELS,pyconvunet:reference
part epochs "${T_EPOCHS:-100}" "$PY" benchmarks/bundle_epochs.py --bundle liver_ct_segmentation --dataset_dir "$DATA" \
  --models "$EPOCH_MODELS" "${EPOCH_ARGS[@]}" --out "$OUT/epochs.md" --json "$RAW/epochs.json"

if [ "$DRY" != 1 ]; then
  part fasttests 60 "$PY" -m pytest tests/networks/test_fast_pyconv.py -k "cuda and not compiled" -q -rs \
    -p no:cacheprovider
fi
log "done"
pack
ls -l "$OUT"
exit 0

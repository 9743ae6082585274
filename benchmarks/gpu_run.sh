#!/usr/bin/env bash
# The whole GPU measurement of issue 6 in one device call (under its 10-minute limit); logs and results in $OUT.
#
# Here, once (no GPU needed; writes only the ignored .whl/):   bash ../shared/tools/device-prep.sh
# Device call: run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
#
# 1. installs the wheels of .whl/ offline into /tmp/site (MONAI and what the device image lacks), as
#    device-prep.sh prescribes, and puts the checkout on PYTHONPATH (pyconv_monai is not pip-installed there);
# 2. env.log: GPU, driver, torch, CUDA, cuDNN, MONAI;
# 3. tests.log: the CUDA tests of the fast PyConv paths (bf16/fp16 autocast against the fp32 reference, forward
#    and gradients, channels_last, torch.compile, auto), at most $TEST_SECONDS (default 170);
# 4. throughput.md / .json / bench.log: benchmarks/throughput.py (512x512, batch 16, inference 64, bf16,
#    channels_last, cudnn.benchmark; every model eager, then compiled in the order of $MODELS) within what is left
#    of $TOTAL_SECONDS (default 560); rows that do not fit read "not run".
#
# PART (first argument): all (default), tests or bench; arguments after it go to throughput.py, e.g. a second
# call for the compiled rows that did not fit:
#   bash benchmarks/gpu_run.sh bench --exec compiled --models unet,pyconvunet:grouped,pyconvunet:depthwise
set -uo pipefail
part=${1:-all}
shift || true
case $part in all | tests | bench) ;; *) echo "unknown part $part: all, tests or bench" >&2 && exit 2 ;; esac
start=$SECONDS
OUT=${OUT:-/tmp/pyconv-gpu}
TOTAL_SECONDS=${TOTAL_SECONDS:-560}
TEST_SECONDS=${TEST_SECONDS:-170}
MODELS=${MODELS:-unet,pyconvunet,pyconvunet:auto,pyconvunet:ungrouped,pyconvunet:dense,pyconvunet:grouped,pyconvunet:split,pyconvunet:depthwise}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if ! python3 -c "import monai" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no .whl/*.whl: run 'bash ../shared/tools/device-prep.sh' here and carry [\".whl\"]" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,temperature.gpu --format=csv
  python3 -c "import torch, monai; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', \
torch.backends.cudnn.version(), 'MONAI', monai.__version__, 'GPU', torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.log"

status=0
if [ "$part" = all ] || [ "$part" = tests ]; then
  timeout --signal=TERM "$TEST_SECONDS" python3 -m pytest tests/networks/test_fast_pyconv.py -k cuda -q -rs \
    -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -20
  rc=$?
  [ $rc -eq 124 ] && echo "tests: stopped at $TEST_SECONDS s" | tee -a "$OUT/tests.log"
  [ $rc -ne 0 ] && status=$rc
fi

if [ "$part" = all ] || [ "$part" = bench ]; then
  budget=$((TOTAL_SECONDS - (SECONDS - start)))
  echo "benchmark budget: $budget s"
  # the benchmark stops itself at its budget; the outer timeout is a safety net
  timeout --signal=TERM $((budget + 30)) python3 benchmarks/throughput.py --device cuda --models "$MODELS" \
    --budget "$budget" --json "$OUT/throughput.json" --out "$OUT/throughput.md" "$@" 2>"$OUT/bench.log"
  rc=$?
  [ $rc -ne 0 ] && { status=$rc; tail -30 "$OUT/bench.log"; cat "$OUT/throughput.md" 2>/dev/null; }
fi

echo "done in $((SECONDS - start)) s"
ls -l "$OUT"
exit $status

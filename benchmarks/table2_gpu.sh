#!/usr/bin/env bash
# The paper's Table 2 on the lent GPU: 6 models x 3 data sets, paper protocol (50 epochs, batch 5, whole 512x512
# slices, seed 0), driven by benchmarks/table2.py over several 10-minute device calls.
#
# Why several calls: a command runs at most 10 minutes and a session has 30 minutes of device time; the matrix
# needs roughly 45-60 minutes of GPU time (estimate from the H100 throughput notes: ~25,700 training images per
# model at 40-150 images/s, plus start-up, caching and per-epoch validation), so plan on two sessions, maybe three.
# What one carry may hold is 64 MiB with the tree (~7 MB): liver_ct_2d (35 MB) goes in one call and lung_ct_2d
# (87 MB) in halves over two more; the ISBI stack is in the tree (data/isbi2012_em).
#
# 1. Here (no GPU), once per session:
#      bash benchmarks/table2_gpu.sh prep
#    -> .whl/ (MONAI, ignite, ... as wheels), .devdata/ (liver_ct_2d), .devdata2/ (lung_ct_2d 1/2),
#       .devdata3/ (lung_ct_2d 2/2), all git-ignored (.git/info/exclude); runs/table2/ (results so far) is ignored.
# 2. Device calls, back to back (a warm machine keeps what earlier calls staged for ~30 s only):
#      run(carry=[".whl", ".devdata", "runs/table2"], command="bash benchmarks/table2_gpu.sh call", timeout_s=600)
#      run(carry=[".devdata2"], command="bash benchmarks/table2_gpu.sh call", timeout_s=600)
#      run(carry=[".devdata3"], command="bash benchmarks/table2_gpu.sh call", timeout_s=600)
#    (later calls of the same session carry nothing). Carry runs/table2 in the FIRST call of a session only: it
#    brings the finished cells (skipped there), and carrying it again would replace the device's copy, which
#    holds the checkpoints of a cell stopped at the end of the previous call (it resumes from them with
#    --resume true). Each call stages the carried data in /tmp/table2-data, trains the data sets that are
#    complete there (ISBI, then liver, then lung; a half-staged set is skipped), starts no new cell in its last
#    100 s ($BUDGET: seconds after the runner's start), stops a running one 45 s before the call's end
#    ($DEADLINE; the call ends within $LIMIT = 585 s; a stopped cell resumes from its last epoch in the next
#    call of the same session, or restarts in a later session, whose machine is fresh), and writes to $OUT:
#      table2-results.tar.gz   runs/table2 without checkpoints: results.jsonl, per-cell history.csv, TensorBoard
#                              events, final/ CSVs, prediction.npz, logs (a few MB)
#      pyconvunet-<bundle>.pt  PyConvU-Net's best weights per finished data set (~6 MB each), for the bundles
#      table2-call.log, env.log
#    $JOBS (default 2) cells train at a time on the GPU (batch 5 leaves an H100 mostly idle); the doc says so
#    beside the times. JOBS=1 gives undisturbed times per run.
# 3. Here, after every call (files_at is the folder the run tool reports):
#      bash benchmarks/table2_gpu.sh collect FILES_AT
#    -> unpacks into runs/table2 and copies the weights to runs/table2-weights/ (outside runs/table2, which the
#    next session's first call carries). When all 18 cells are in:
#      python benchmarks/table2.py report        # docs/table2.md + docs/figures/table2_*.png
#    and, for the bundles, cp runs/table2-weights/pyconvunet-<bundle>.pt bundles/<bundle>/models/model.pt
#    (git add -f), then fill the bundle docs' Performance sections and metadata.json eval_metrics.
# The exact runner command of every call is in table2-call.log and in every results row (runner_command).
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-call}
shift || true
DATA=${TABLE2_DATA:-/tmp/table2-data}
RESULTS=${TABLE2_RESULTS:-runs/table2}

case $part in
  prep)
    shared=${SHARED:-../shared}
    bash "$shared/tools/device-prep.sh" liver_ct_2d || exit
    DEST=.devdata2 bash "$shared/tools/device-prep.sh" lung_ct_2d:1/2 || exit
    DEST=.devdata3 bash "$shared/tools/device-prep.sh" lung_ct_2d:2/2 || exit
    du -sh .whl .devdata .devdata2 .devdata3 "$RESULTS" 2>/dev/null
    ;;
  call)
    OUT=${OUT:-/tmp/table2-out}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    if ! python3 -c "import monai, ignite" 2>/dev/null; then  # the device image has torch but no MONAI
      if [ ! -d /tmp/site/monai ]; then
        [ -n "$(ls .whl/*.whl 2>/dev/null)" ] || { echo "no .whl/: a fresh machine, carry .whl (call 1)" >&2; exit 2; }
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
          .whl/*.whl || exit
      fi
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    mkdir -p "$DATA"
    for d in .devdata .devdata2 .devdata3; do
      [ -d "$d" ] && cp -rn "$d/." "$DATA/"
    done
    [ -e "$DATA/isbi2012_em" ] || ln -s "$PWD/data/isbi2012_em" "$DATA/isbi2012_em"
    {
      date -u
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', \
monai.__version__, 'gpu', torch.cuda.get_device_name())"
      for d in "$DATA"/*; do echo "$d: $(find -L "$d" -type f | wc -l) files"; done
    } 2>&1 | tee "$OUT/env.log"
    left=$((${LIMIT:-585} - SECONDS))  # seconds left of this call (the device stops a command at 600)
    timeout --signal=TERM $((left - 15)) python3 benchmarks/table2.py run --data-root "$DATA" --results-dir "$RESULTS" \
      --datasets neuron_em_segmentation,liver_ct_segmentation,lung_ct_segmentation --jobs "${JOBS:-2}" \
      --budget "${BUDGET:-$((left - 100))}" --deadline "${DEADLINE:-$((left - 45))}" "$@" 2>&1 | tee "$OUT/table2-call.log"
    status=${PIPESTATUS[0]}
    tar -czf "$OUT/table2-results.tar.gz" --exclude='*.pt' --exclude='*.tmp' -C "$(dirname "$RESULTS")" \
      "$(basename "$RESULTS")"
    python3 - "$RESULTS" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
results, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines() if x.strip()] if (
    results / "results.jsonl").is_file() else []
done = {r["dataset"] for r in rows if r["model"] == "pyconvunet" and r["status"] == "ok"}
for dataset in sorted(done):
    weights = results / dataset / "pyconvunet" / "models" / "model.pt"
    if weights.is_file():
        shutil.copy(weights, out / f"pyconvunet-{dataset}.pt")
print(f"{len({(r['model'], r['dataset']) for r in rows if r['status'] == 'ok'})} of 18 cells finished")
PY
    ls -l "$OUT"
    exit "$status"
    ;;
  collect)
    src=${1:?usage: table2_gpu.sh collect FILES_AT}
    mkdir -p "$RESULTS-weights"
    tar -xzf "$src/table2-results.tar.gz" -C "$(dirname "$RESULTS")" || exit
    for f in "$src"/pyconvunet-*.pt; do [ -f "$f" ] && cp "$f" "$RESULTS-weights/"; done
    cp "$src/table2-call.log" "$RESULTS/last-call.log" 2>/dev/null
    python3 - "$RESULTS" <<'PY'
import json, sys
from pathlib import Path
rows = {}
for line in (Path(sys.argv[1]) / "results.jsonl").read_text().splitlines():
    if line.strip():
        r = json.loads(line)
        rows[(r["model"], r["dataset"])] = r
ok = sorted(k for k, r in rows.items() if r["status"] == "ok")
print(f"{len(ok)} of 18 cells finished:", ", ".join(f"{d.split('_')[0]}/{m}" for m, d in ok))
PY
    ;;
  *)
    echo "usage: table2_gpu.sh prep | call [table2.py run options] | collect FILES_AT" >&2
    exit 2
    ;;
esac

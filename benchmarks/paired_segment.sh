#!/usr/bin/env bash
# Paired whole-process timing of the main job (`pyconv-monai segment` on the embedded 20-slice DICOM series) against
# an earlier commit, in alternating order, on this machine.
#
#   git worktree add /tmp/base <commit>
#   ROUNDS=4 bash benchmarks/paired_segment.sh /tmp/base
#
# Three variants per round: "base" (the worktree's package, imported through PYTHONPATH, with the model cache off),
# "cold" (this checkout, a fresh model cache: export + compile) and "warm" (this checkout, the cache a previous run
# wrote: the second run of a user). Prints one Markdown row per run (wall and user seconds from /usr/bin/time, exit
# status, the volume from volumes.csv) and the medians. Needs the venv of this checkout active and GNU time.
set -euo pipefail

base=${1:?usage: paired_segment.sh BASE_WORKTREE}
rounds=${ROUNDS:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
base=$(cd "$base" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/paired_segment.XXXXXX")
trap 'rm -rf "$work"' EXIT
series=data/ct_dicom_totalseg/dicom
args=(--bundle liver_ct_segmentation --no-progress)

run() {  # variant round
    local variant=$1 round=$2 out="$work/out_$1_$2" dir cache pp
    case $variant in
        base) dir=$base cache=off pp=$base ;;
        cold) dir=$here cache="$work/cache_cold_$round" pp=${PYTHONPATH:-} ;;
        warm) dir=$here cache="$work/cache_warm" pp=${PYTHONPATH:-} ;;
    esac
    local t rc=0
    t=$(cd "$dir" && PYTHONPATH=$pp PYCONV_MONAI_ONNX_CACHE=$cache /usr/bin/time -f "%e %U" \
        python -m pyconv_monai.cli segment "$series" "$out" "${args[@]}" 2>&1 >/dev/null | tail -1) || rc=$?
    local volume
    volume=$(python - "$out/volumes.csv" <<'EOF' 2>/dev/null || echo "?"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(";".join(next((v for k, v in r.items() if k.startswith("volume")), "?") for r in rows))
EOF
)
    echo "| $round | $variant | ${t% *} | ${t#* } | $rc | $volume |" | tee -a "$work/rows"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | variant | wall s | user s | rc | volume mL |"
echo "|---:|---|---:|---:|---:|---:|"
run warm 0 >/dev/null  # writes the warm cache (and warms the file system); not counted
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order=(base cold warm); else order=(warm cold base); fi
    for v in "${order[@]}"; do run "$v" "$r"; done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python - "$work/rows" <<'EOF'
import statistics, sys
rows = [line.strip("| \n").split(" | ") for line in open(sys.argv[1]) if not line.startswith("| 0 ")]
for variant in ("base", "cold", "warm"):
    wall = [float(r[2]) for r in rows if r[1] == variant]
    print(f"median {variant}: {statistics.median(wall):.2f} s wall over {len(wall)} run(s)")
EOF

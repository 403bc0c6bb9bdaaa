#!/usr/bin/env bash
# bench/run.sh - `make bench`: each section measures fedsm against its reference in the
# same run and prints a table.  Env: BUILD (build dir), BENCH_SECONDS (per measurement,
# default 5), BENCH_THREADS (default "1 2").  Sections: train (ResNet-8 training, vs PyTorch).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${BENCH_SECONDS:-5}
THREADS=${BENCH_THREADS:-"1 2"}
PY=/usr/bin/python3

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

section_train() {
    echo "== ResNet-8 training, batch 32 (forward + CE + backward + SGD), fp32 =="
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)  (other processes share these cores)"
    printf '%-8s %12s %12s %8s %10s %10s %8s\n' threads fedsm_img/s torch_img/s ratio fedsm_GF/s peak_GF/s %peak
    for t in $THREADS; do
        peak=$("$BUILD/bench/peak_fma" "$t" | field gflops)
        c=$("$BUILD/bench/train_resnet8" "$t" 32 "$SECS")
        ci=$(echo "$c" | field images_per_s); cg=$(echo "$c" | field gflops)
        if "$PY" -c 'import torch' 2>/dev/null; then
            ti=$("$PY" bench/torch_resnet8.py "$t" 32 "$SECS" | field images_per_s)
        else
            ti=nan
        fi
        awk -v t="$t" -v ci="$ci" -v ti="$ti" -v cg="$cg" -v pk="$peak" 'BEGIN {
            r = (ti == "nan" || ti == 0) ? "n/a" : sprintf("%.2f", ci / ti);
            printf "%-8s %12.1f %12s %8s %10.1f %10.1f %7.1f%%\n", t, ci, ti, r, cg, pk, 100 * cg / pk }'
    done
}

section_train

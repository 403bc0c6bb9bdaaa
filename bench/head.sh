#!/usr/bin/env bash
# bench/head.sh - the fresh-head retraining (lib/fl/head.h), C (build/bench/head_bench) vs
# PyTorch (bench/head_torch.py) in the same run, one thread each: CReFF's server step (C*100
# features, 300 epochs, batch 32; CIFAR-10 and CIFAR-100 sizes, epochs cut to EPOCHS) and
# FedSM's client step (C*100 pseudo-features, 60 epochs, batch 256).  Ratios are torch time /
# C time (> 1: C faster), by wall clock and by CPU time (the fairer one on a shared machine).
# Env: BUILD (build dir), EPOCHS (CReFF rows, default 100; the full step is 300).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
E=${EPOCHS:-100}
PY=$PWD/bench/py.sh   # PyTorch without the OPENBLAS_* overrides (bench/py.sh)
field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p"; }
have_torch=1
$PY -c 'import torch' 2>/dev/null || { have_torch=0; echo "(no python3-torch: PyTorch columns n/a)"; }
echo "== head retraining (fresh Linear, SGD, CE), 1 thread; load average before: $(cut -d' ' -f1-3 /proc/loadavg) =="
printf '%-34s | %8s %10s %10s %7s | %9s %9s %7s\n' step steps C_steps/s torch_st/s ratio C_cpu_s torch_cpu ratio
run() { # label, N D C EPOCHS BATCH
    local label=$1 c t="" ; shift
    c=$("$BUILD/bench/head_bench" "$@")
    [ $have_torch = 1 ] && t=$($PY bench/head_torch.py "$@")
    local st cs cc ts=nan tc=nan
    st=$(echo "$c" | field steps); cs=$(echo "$c" | field seconds); cc=$(echo "$c" | field cpu_seconds)
    if [ -n "$t" ]; then ts=$(echo "$t" | field seconds); tc=$(echo "$t" | field cpu_seconds); fi
    awk -v l="$label" -v st="$st" -v cs="$cs" -v cc="$cc" -v ts="$ts" -v tc="$tc" 'BEGIN {
        tr = ts == "nan" ? "n/a" : sprintf("%.0f", st / ts); r1 = ts == "nan" ? "n/a" : sprintf("%.1f", ts / cs)
        r2 = tc == "nan" ? "n/a" : sprintf("%.1f", tc / cc)
        printf "%-34s | %8d %10.0f %10s %7s | %9.3f %9s %7s\n", l, st, st / cs, tr, r1, cc, tc, r2 }'
}
run "CReFF C10 D256 1000 feat b32" 1000 256 10 "$E" 32
run "CLIP2FL C10 D512 1000 feat b32" 1000 512 10 "$E" 32
run "CReFF C100 D256 10000 feat b32" 10000 256 100 "$((E / 10 > 0 ? E / 10 : 1))" 32
run "FedSM C10 D512 1000 feat b256" 1000 512 10 60 256
run "FedSM C100 D512 10000 feat b256" 10000 512 100 6 256
echo "CReFF rows: $E epochs (C100: $((E / 10 > 0 ? E / 10 : 1))) of the 300 per round; FedSM C100: 6 of 60."

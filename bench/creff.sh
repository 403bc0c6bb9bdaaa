#!/usr/bin/env bash
# bench/creff.sh - CReFF/CLIP2FL's per-round extras, C (build/bench/creff_bench) vs PyTorch
# (bench/creff_torch.py) in the same run: the client's per-class head-gradient step
# (ResNet-8, a 620-image long-tailed client, batch 32, REPEATS repeats; the full step is
# 10 repeats) and the server's federated-feature update (100 features per class; CReFF
# without and CLIP2FL with the PCL term).  Ratios are torch time / C time (> 1: C faster),
# by wall clock and by CPU time (the fairer one on a shared machine).
# Env: BUILD (build dir), THREADS (default 1), REPEATS (default 2).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
T=${THREADS:-1}
R=${REPEATS:-2}
PY=$PWD/bench/py.sh   # PyTorch without the OPENBLAS_* overrides (bench/py.sh)
field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p"; }
have_torch=1
$PY -c 'import torch' 2>/dev/null || { have_torch=0; echo "(no python3-torch: PyTorch columns n/a)"; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); threads $T"
printf '%-34s | %9s %9s %7s | %9s %9s %7s\n' step C_s torch_s ratio C_cpu_s torch_cpu ratio
row() { # label, C output, torch output
    local cs cc ts=nan tc=nan
    cs=$(echo "$2" | field seconds); cc=$(echo "$2" | field cpu_seconds)
    if [ -n "$3" ]; then ts=$(echo "$3" | field seconds); tc=$(echo "$3" | field cpu_seconds); fi
    awk -v l="$1" -v cs="$cs" -v cc="$cc" -v ts="$ts" -v tc="$tc" 'BEGIN {
        r1 = ts == "nan" ? "n/a" : sprintf("%.2f", ts / cs); r2 = tc == "nan" ? "n/a" : sprintf("%.2f", tc / cc)
        printf "%-34s | %9.3f %9s %7s | %9.3f %9s %7s\n", l, cs, ts, r1, cc, tc, r2 }'
}
run() { # label, args...
    local label=$1 c t=""; shift
    c=$("$BUILD/bench/creff_bench" "$@")
    [ $have_torch = 1 ] && t=$($PY bench/creff_torch.py "$@")
    row "$label" "$c" "$t"
}
run "client grads C10 D256 x$R repeats" client 10 256 "$R" "$T"
run "featgen CReFF C10 D256 100 it" featgen 10 256 100 0 "$T"
run "featgen CLIP2FL C10 D512 20 it" featgen 10 512 20 1 "$T"
run "featgen CReFF C100 D256 3 it" featgen 100 256 3 0 "$T"
echo "seconds per call; ratio = torch / C.  Per round: client step = its row x 10/$R per client;"
echo "featgen = the row x 100/iterations (PyTorch is slow here: the short rows keep the section short)."

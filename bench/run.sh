#!/usr/bin/env bash
# bench/run.sh - `make bench`: each section measures fedsm against its reference in the
# same run and prints its table.  Sections: "train" (ResNet-8 training vs PyTorch, below),
# then every other bench/*.sh script (one section each, e.g. clip, partition).
# Env: BUILD (build dir), BENCH_SECTIONS (space-separated names to run; default all),
# BENCH_SECONDS (per train measurement, default 5), BENCH_THREADS (default "1 2").
#
# Two rates per run: wall-clock images/s, and cpu images/s = images per CPU-second of the
# process times threads (the rate with a whole core per thread).  On a shared machine the
# second is the fairer comparison; both are printed.  GF/s counts 3x the forward FLOPs.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${BENCH_SECONDS:-5}
THREADS=${BENCH_THREADS:-"1 2"}
PY=$PWD/bench/py.sh   # PyTorch without the OPENBLAS_* overrides (bench/py.sh)

# blas_core PYTHON: the core OpenBLAS picks in that environment (both sides load Debian's
# libopenblas; the variable decides).
blas_core() {
    "$1" -c 'import ctypes, ctypes.util
l = ctypes.CDLL(ctypes.util.find_library("openblas") or "libopenblas.so.0")
l.openblas_get_corename.restype = ctypes.c_char_p
print(l.openblas_get_corename().decode())' 2>/dev/null || echo unknown
}

field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p"; }

section_train() {
    echo "== ResNet-8 training, batch 32 (forward + CE + backward + SGD), fp32 =="
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
         "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "OpenBLAS core: fedsm side $(blas_core /usr/bin/python3) (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})," \
         "PyTorch side $(blas_core "$PY") (overrides removed by bench/py.sh)"
    local have_torch=1
    "$PY" -c 'import torch' 2>/dev/null || { have_torch=0; echo "(no python3-torch: PyTorch columns n/a)"; }
    printf '%-7s | %9s %9s %9s %9s %6s | %9s %9s %9s %9s %6s | %8s %8s %6s\n' \
        threads fedsm igemm blas torch ratio fedsm_cpu igemm_cpu blas_cpu torch_cpu ratio \
        GF/s_cpu peak %peak
    for t in $THREADS; do
        peak=$("$BUILD/bench/peak_fma" "$t" | field cpu_gflops)
        c=$("$BUILD/bench/train_resnet8" "$t" 32 "$SECS" default)
        g=$("$BUILD/bench/train_resnet8" "$t" 32 "$SECS" igemm)
        b=$("$BUILD/bench/train_resnet8" "$t" 32 "$SECS" blas)
        tr=nan; trc=nan
        if [ $have_torch = 1 ]; then
            o=$("$PY" bench/torch_resnet8.py "$t" 32 "$SECS")
            tr=$(echo "$o" | field images_per_s); trc=$(echo "$o" | field cpu_images_per_s)
        fi
        awk -v t="$t" -v ci="$(echo "$c" | field images_per_s)" -v cc="$(echo "$c" | field cpu_images_per_s)" \
            -v gi="$(echo "$g" | field images_per_s)" -v gc="$(echo "$g" | field cpu_images_per_s)" \
            -v bi="$(echo "$b" | field images_per_s)" -v bc="$(echo "$b" | field cpu_images_per_s)" \
            -v ti="$tr" -v tc="$trc" -v cg="$(echo "$c" | field cpu_gflops)" -v pk="$peak" 'BEGIN {
            r1 = (ti == "nan") ? "n/a" : sprintf("%.2f", ci / ti);
            r2 = (tc == "nan") ? "n/a" : sprintf("%.2f", cc / tc);
            printf "%-7s | %9.1f %9.1f %9.1f %9s %6s | %9.1f %9.1f %9.1f %9s %6s | %8.1f %8.1f %5.1f%%\n",
                   t, ci, gi, bi, ti, r1, cc, gc, bc, tc, r2, cg, pk, 100 * cg / pk }'
    done
    echo "fedsm = the default conv algorithm ($(echo "$c" | field conv) here: FEDSM_CONV_ALGO or nn's"
    echo "default), igemm = own implicit-GEMM kernels (AVX-512), blas = im2col + OpenBLAS sgemm;"
    echo "ratio = fedsm / torch; images/s; GF/s counts 3x the direct conv's forward FLOPs (Winograd"
    echo "does fewer: its GF/s and %peak are effective rates); peak = bench/peak_fma, per CPU-second."
}

want() { [ -z "${BENCH_SECTIONS:-}" ] || [[ " $BENCH_SECTIONS " == *" $1 "* ]]; }

rc=0
want train && section_train
for f in bench/*.sh; do
    name=$(basename "$f" .sh)
    [ "$name" = run ] && continue
    want "$name" || continue
    echo
    echo "== section $name ($f) =="
    BUILD=$BUILD bash "$f" || { echo "section $name failed (rc $?)"; rc=1; }
done
exit $rc

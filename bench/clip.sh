#!/usr/bin/env bash
# bench/clip.sh - CLIP ViT-B/32 encoders, C (build/bench/clip) vs PyTorch fp32 in the same
# run, same random weights of the real size: images/s at batch 1 and 64, prompts/s, ratio,
# GFLOP/s against a 420 GFLOP/s 2-core AVX-512 FMA peak.  PyTorch is measured with and
# without OMP_WAIT_POLICY=PASSIVE.  Env: BUILD (build dir), THREADS (default 2),
# CLIP_BENCH_WEIGHTS (reuse a weights file; default: made in a temp dir, ~600 MB).
# Timings on a shared machine are noisy: compare numbers from the same run only.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
PY=/usr/bin/python3
$PY -c 'import torch' 2>/dev/null || { echo "clip bench: skipped (python3-torch missing)"; exit 0; }
W=${CLIP_BENCH_WEIGHTS:-}
if [ -z "$W" ]; then
    tmp=$(mktemp -d /tmp/fedsm-clip-bench.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    W=$tmp/b32.safetensors
    $PY bench/clip_torch.py save "$W"
fi
out=$(mktemp /tmp/fedsm-clip-bench-out.XXXXXX)
"$BUILD/bench/clip" "$W" "$THREADS" | tee "$out"
FEDSM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE $PY bench/clip_torch.py time "$W" | sed 's/^torch /torch_passive /' | tee -a "$out"
FEDSM_THREADS=$THREADS $PY bench/clip_torch.py time "$W" | tee -a "$out"
awk -v peak=420 '
    { v[$1 " " $2] = $3 }
    END {
        printf "\nCLIP ViT-B/32 fp32, %s threads        C     torch(PASSIVE)  torch(default)  C/best torch\n", ENVIRON["THREADS"] ? ENVIRON["THREADS"] : 2
        n = split("image_b1 image_b64 text_b64", k, " ")
        for (i = 1; i <= n; i++) {
            c = v["c " k[i]]; tp = v["torch_passive " k[i]]; td = v["torch " k[i]]
            b = tp; if (td > b) b = td
            r = 0; if (b > 0) r = c / b
            unit = "images/s "; if (index(k[i], "text")) unit = "prompts/s"
            printf "%-10s %s %8.2f %14.2f %15.2f %12.2f\n", k[i], unit, c, tp, td, r
        }
        g = v["c gflop_per_image"]
        printf "C GFLOP/s: batch 1 %.1f, batch 64 %.1f (%.0f%% of %d peak); torch batch 64 best %.1f\n",
            v["c gflops_b1"], v["c gflops_b64"], 100 * v["c gflops_b64"] / peak, peak,
            g * (v["torch_passive image_b64"] > v["torch image_b64"] ? v["torch_passive image_b64"] : v["torch image_b64"])
    }' "$out"
rm -f "$out"

#!/usr/bin/env bash
# bench/partition.sh - wall time and peak memory of `partition` on all of CIFAR-10 from the
# JPEG folder (60,000 images of ../shared/data/cifar10-jpeg.tar.zst).  Goal: < 10 s on 2 cores.
# Not a test.  The archive is extracted to a temp dir first (not timed).  Runs:
#   --if 1   every image decoded and written (the 60,000-image figure)
#   --if 100 the paper setting (all 60,000 still decoded; 12,406 + 10,000 written)
# Prints one line per run: "partition <label>: wall S s, peak RSS M MiB, threads T, load L".
# Env: BUILD (default build), FEDSM_SHARED_DATA, THREADS (default 2).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DATA=${FEDSM_SHARED_DATA:-$PWD/../shared/data}
TAR=$DATA/cifar10-jpeg.tar.zst
THREADS=${THREADS:-2}
P=$PWD/$BUILD/bin/partition
[ -x "$P" ] || { echo "partition: not built (make all)"; exit 1; }
[ -f "$TAR" ] || { echo "partition: skipped, no $TAR"; exit 0; }
W=$(mktemp -d /tmp/fedsm-bench-partition.XXXXXX)
trap 'rm -rf "$W"' EXIT
t0=$(date +%s.%N)
zstd -dc --long=27 "$TAR" | tar x -C "$W"
echo "partition: extracted $TAR in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (not timed below)"
for spec in "1 if1-all-60000" "100 if100"; do
    set -- $spec
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %M' -o "$W/time" "$P" --in "$W" -o "$W/out-$2" --if "$1" --threads "$THREADS" -q
    read -r wall kb <"$W/time"
    echo "partition $2: wall $wall s, peak RSS $((kb / 1024)) MiB, threads $THREADS, load before $load ($(nproc) cores)"
    rm -rf "$W/out-$2"
done

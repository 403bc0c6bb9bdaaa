#!/usr/bin/env bash
# bench/run.sh - `make bench`: runs every benchmark section (bench/*.sh other than this one)
# and prints their tables.  Benchmarks compare against PyTorch (Debian python3-torch) measured
# in the same run on the same machine; they are not tests and never fail on speed.
set -u
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build} FEDSM_BIN=$PWD/${BUILD:-build}/bin
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
rc=0
for b in bench/*.sh; do
    [ "$(basename "$b")" = run.sh ] && continue
    echo; echo "== $(basename "$b" .sh) =="
    bash "$b" || { echo "(section $b failed)"; rc=1; }
done
exit $rc

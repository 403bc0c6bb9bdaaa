#!/usr/bin/env bash
# tests/fuzz/run.sh BIN SECONDS [CORPUS] - runs the libFuzzer target BIN for SECONDS on a copy
# of the seed corpus CORPUS (default tests/fuzz/corpus; never modified); exits non-zero on a crash, leak, timeout
# or out-of-memory.  Crash inputs are kept in $FUZZ_ARTIFACTS (default: a temp dir, printed).
set -u
bin=${1:?usage: run.sh BIN SECONDS}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
seeds=${3:-$here/corpus}
work=$(mktemp -d /tmp/fedsm-fuzz.XXXXXX)
art=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$work/corpus" "$art"
cp "$seeds"/* "$work/corpus/"
nice -n 10 "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work/corpus" 2>"$work/log"
rc=$?
grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|INFO: Loaded|==[0-9]+==ERROR)' "$work/log" | tail -n 8
if [ $rc != 0 ]; then
    tail -n 40 "$work/log"
    echo "fuzz: FAILED (rc $rc); crash inputs in $art"
    exit 1
fi
rm -rf "$work"
echo "fuzz: ok"

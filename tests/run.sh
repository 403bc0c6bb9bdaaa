#!/usr/bin/env bash
# tests/run.sh - runs every unit test binary and every tool test script; prints
# "N passed, N failed" (and skips) last.  A test exits 0 pass, 77 skip, else fail.
# Env: BUILD (build dir), FUZZ_SECONDS (0 skips the fuzz runs; record's length, default 60),
# FUZZ_WEIGHTS_SECONDS (the weight readers', default 30), FUZZ_METHODS_SECONDS (the gradients
# and prototypes readers', default 20), FUZZ_READERS_SECONDS (the model, shard, teacher and
# embeddings readers', default 15), TESTS (a filter regex), FAIL_FAST (1: run nothing after
# the first failure; the mutation tests use it, one failure being a kill).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD FEDSM_BIN="$PWD/$BUILD/bin" PATH="$PWD/$BUILD/bin:$PATH"
filter=${TESTS:-.}
pass=0 fail=0 skip=0 failed=()
logdir=$(mktemp -d /tmp/fedsm-tests.XXXXXX)
run_one() { # name, command...
    local name=$1; shift
    [[ $name =~ $filter ]] || return 0
    [ "${FAIL_FAST:-0}" = 0 ] || [ $fail = 0 ] || return 0
    local t0=$SECONDS log="$logdir/${name//\//_}.log"
    "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc = 0 ]; then pass=$((pass+1)); printf 'PASS %-40s %4ds\n' "$name" $((SECONDS-t0))
    elif [ $rc = 77 ]; then skip=$((skip+1)); printf 'SKIP %-40s %s\n' "$name" "$(tail -n1 "$log")"
    else fail=$((fail+1)); failed+=("$name"); printf 'FAIL %-40s (rc %d)\n' "$name" $rc; tail -n 20 "$log" | sed 's/^/    /'
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"
done
for t in tests/tools/*.sh; do
    case $(basename "$t") in lib*) continue;; esac
    [ -f "$t" ] && run_one "tools/$(basename "$t" .sh)" bash "$t"
done
if [ "${FUZZ_SECONDS:-60}" != 0 ] && [ -x "$BUILD/fuzz/fuzz_record" ]; then
    run_one "fuzz/record" tests/fuzz/run.sh "$BUILD/fuzz/fuzz_record" "${FUZZ_SECONDS:-60}"
fi
if [ "${FUZZ_SECONDS:-60}" != 0 ] && [ -x "$BUILD/fuzz/fuzz_weights" ]; then
    run_one "fuzz/weights" tests/fuzz/run.sh "$BUILD/fuzz/fuzz_weights" "${FUZZ_WEIGHTS_SECONDS:-30}" tests/fuzz/corpus-weights
fi
if [ "${FUZZ_SECONDS:-60}" != 0 ] && [ -x "$BUILD/fuzz/fuzz_methods" ]; then
    run_one "fuzz/methods" tests/fuzz/run.sh "$BUILD/fuzz/fuzz_methods" "${FUZZ_METHODS_SECONDS:-20}" tests/fuzz/corpus-methods
fi
if [ "${FUZZ_SECONDS:-60}" != 0 ] && [ -x "$BUILD/fuzz/fuzz_readers" ]; then
    run_one "fuzz/readers" tests/fuzz/run.sh "$BUILD/fuzz/fuzz_readers" "${FUZZ_READERS_SECONDS:-15}" tests/fuzz/corpus-readers
fi
echo "logs: $logdir"
[ ${#failed[@]} = 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]

#!/usr/bin/env bash
# hostile.sh - the hostile-input matrix (issue 15): every tool and pipeline against damaged,
# wrong and poisoned inputs and bad option values.  tests/hostile/make_corpus.py makes small
# valid records with the tools and damages them (every kind a tool reads: empty, end record
# only, cut, a flipped byte, trailing garbage, end count off by one either way, another kind
# or version, wrong dtype/rank/shape, 2^40 declared elements, NaN/Inf, negative and
# overflowing counts, a required field gone; a directory, a missing path, /dev/null), plus
# bad option values, bad endpoints and bad outputs, and the pipelines' bad options;
# tests/hostile/run_cases.py runs each case (2 at a time, 60 s limit each) and checks the
# exit code tests/hostile/expect.txt gives, one "TOOL: error:" line, nothing left in the
# output folder.  Prints every failure with its command and stderr, then "N cases, N passed".
# Env: HOSTILE_FILTER (a regex on "scenario slot case"), HOSTILE_JOBS (default 2).
source "$(dirname "$0")/lib.sh"
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "Debian python3 with numpy, msgpack, zstandard needed"
for t in partition aggregate local-train featgen retrain evaluate clip-embed inspect gen-demo; do
    [ -x "$FEDSM_BIN/$t" ] || skip "no $FEDSM_BIN/$t (build first)"
done
H=$FEDSM_ROOT/tests/hostile
$PY "$H/make_corpus.py" "$FEDSM_BIN" "$T/m" || fail "make_corpus.py"
# the pipelines find the tools through FEDSM_BIN; they must not read the user's cache.
# OpenBLAS is held at one thread by every tool anyway: this spares starting its pool 1,300 times
export OPENBLAS_NUM_THREADS=1
FEDSM_CACHE=$T/cache $PY "$H/run_cases.py" "$T/m/cases.jsonl" "$H/expect.txt" -j "${HOSTILE_JOBS:-2}" \
    --filter "${HOSTILE_FILTER:-}" --known "$H/known.txt" || fail "hostile-input matrix"
done_tests

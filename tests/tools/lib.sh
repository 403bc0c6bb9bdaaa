# tests/tools/lib.sh - sourced by the tool test scripts (not a test itself: run.sh only runs
# tests/tools/*.sh files that do not start with "lib").
# Gives: $T (a temp dir removed on exit), PY (Debian's python3), fail, expect_rc, skip,
# skip_check, term_stopped_group, done_tests.
set -u
FEDSM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
FEDSM_BIN=${FEDSM_BIN:-$FEDSM_ROOT/$BUILD/bin}
T=$(mktemp -d /tmp/fedsm-t.XXXXXX)
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS+1)); }
skip() { echo "skipped: $*"; exit 77; }
# expect_rc CODE CMD... : runs CMD, checks its exit code; stderr kept in $T/err
expect_rc() {
    local want=$1; shift
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [ "$rc" != "$want" ]; then fail "expected exit $want, got $rc: $*"; sed 's/^/    /' "$T/err" >&2; return 1; fi
    return 0
}
# expect_one_error_line: the last command's stderr holds exactly one "error:" line
expect_one_error_line() {
    local n; n=$(grep -c 'error:' "$T/err")
    [ "$n" = 1 ] || { fail "expected one error line, got $n:"; sed 's/^/    /' "$T/err" >&2; }
}
# term_stopped_group PID: TERM, then CONT, to the stopped process group PID (a child of this
# shell started with setsid, stopped with STOP); waits for PID and returns its exit status.
# A process forked while the group was being stopped can stop after the one CONT, so CONT
# is sent again every 0.1 s for up to 10 s while the group lives.
term_stopped_group() {
    local pid=$1 rc
    kill -TERM -- -"$pid" 2>/dev/null; kill -CONT -- -"$pid" 2>/dev/null
    ( for i in $(seq 1 100); do sleep 0.1; kill -CONT -- -"$pid" 2>/dev/null || break; done ) &
    wait "$pid"; rc=$?
    return $rc
}
# skip_check WHY: one check of a script cannot run; the script then ends SKIP (77), not PASS
SKIPPED=""
skip_check() { echo "check skipped: $*"; SKIPPED="$*"; }
done_tests() {
    [ "$FAILS" = 0 ] || { echo "$FAILS failures"; exit 1; }
    [ -z "$SKIPPED" ] || skip "$SKIPPED"
    echo ok; exit 0
}

# tests/tools/lib.sh - sourced by the tool test scripts (not a test itself: run.sh only runs
# tests/tools/*.sh files that do not start with "lib").
# Gives: $T (a temp dir removed on exit), PY (Debian's python3), fail, expect_rc, skip.
set -u
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
done_tests() { [ "$FAILS" = 0 ] && { echo ok; exit 0; }; echo "$FAILS failures"; exit 1; }

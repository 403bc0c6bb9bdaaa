#!/usr/bin/env bash
# records_pipe_end.sh - a stream read from a pipe or socket must end with its end record: one
# that stops without it (its producer died) is exit 3 with one line naming the stream and
# the last record read, while a complete file without an end record (written by another
# program, e.g. Python) stays readable, by path and redirected to stdin (docs/format.md,
# "Records and streams").
source tests/tools/lib.sh
H=${BUILD:-build}/helpers
G=tests/tools/gen.py
$PY $G write "$T/noend.mpk.zst" --records 3 --no-end || fail "gen.py --no-end"

# complete streams: a pipe with its end record; files without one
$H/rec-gen --records 3 - | $H/rec-check --records 3 - >"$T/out" 2>&1 || fail "a pipe with its end record: $(cat "$T/out")"
expect_rc 0 $H/rec-check --records 3 "$T/noend.mpk.zst" || fail "a file without an end record"
expect_rc 0 $H/rec-check --records 3 - <"$T/noend.mpk.zst" || fail "a file without an end record on stdin"

# the same bytes through a pipe: the producer died before its end record
cat "$T/noend.mpk.zst" | $H/rec-check --records 3 - >"$T/out" 2>"$T/err"
st=${PIPESTATUS[1]}
[ "$st" = 3 ] || fail "a pipe without its end record: exit $st"
expect_one_error_line
grep -q "stream <stdin> ended without its end record after record 2 (update)" "$T/err" || fail "message: $(cat "$T/err")"
expect_rc 3 $H/rec-check <(cat "$T/noend.mpk.zst") && expect_one_error_line
grep -q "stream /dev/fd/[0-9]* ended without its end record after record 2" "$T/err" || fail "process substitution: $(cat "$T/err")"
# a complete stream, then a second part whose producer died
$H/rec-gen --records 2 - >"$T/c.mpk.zst"
cat "$T/c.mpk.zst" "$T/noend.mpk.zst" | "$FEDSM_BIN/inspect" - >/dev/null 2>"$T/err"
st=${PIPESTATUS[1]}
[ "$st" = 3 ] && grep -q "after record 4 (update)" "$T/err" || fail "second part: $(cat "$T/err")"
# nothing at all
true | "$FEDSM_BIN/inspect" - >/dev/null 2>"$T/err"
st=${PIPESTATUS[1]}
[ "$st" = 3 ] && expect_one_error_line && grep -q "ended with no record and no end record" "$T/err" ||
    fail "empty pipe: $(cat "$T/err")"
# a producer killed mid-stream: the stream stops inside a record or between two; exit 3 either way
( $H/rec-gen --records 100000 --sleep-ms 1 - & p=$!; sleep 0.5; kill -9 $p ) | $H/rec-check - >/dev/null 2>"$T/err"
st=${PIPESTATUS[1]}
[ "$st" = 3 ] && expect_one_error_line && grep -q "stream <stdin>" "$T/err" || fail "killed producer: $(cat "$T/err")"
done_tests

#!/usr/bin/env bash
# records_corrupt.sh - the corrupt-input matrix (tests/tools/gen.py corrupt: truncated frames
# at several offsets, flipped bytes, wrong magic, bad versions, unknown dtypes, shape/data
# mismatch, absurd dims, deep nesting, huge declared counts and lengths, ext types, NULs and
# newlines in names, end-count mismatch both ways, cut zstd skippable frames, empty and
# non-zstd files) plus a missing file and a directory.  Each through `inspect FILE`,
# `inspect - <FILE` and `inspect --tensor w -o F`: exit 3 (format) or 4 (I/O), exactly one
# `error:` line naming the stream (and record for format errors), no crash, no output or
# temp file left behind.
source tests/tools/lib.sh
$PY tests/tools/gen.py corrupt "$T/cm" || fail "gen.py corrupt"
out="$T/o/out.npy"
mkdir -p "$T/o"
check_case() { # rc file-or-dir name-in-message
    local want=$1 f=$2 name=$3
    expect_rc "$want" inspect "$f" || return
    expect_one_error_line
    grep -q "error: .*$name" "$T/err" || fail "$f: message does not name $name: $(cat "$T/err")"
    if [ "$want" = 3 ]; then
        grep -q "record [0-9]" "$T/err" || grep -q "empty stream" "$T/err" ||
            grep -q "incomplete" "$T/err" || grep -q "more records than it declares" "$T/err" ||
            fail "$f: message names no record: $(cat "$T/err")"
    fi
    expect_rc "$want" inspect --tensor w -o "$out" "$f" && expect_one_error_line
    [ -z "$(ls -A "$T/o")" ] || { fail "$f: output left behind: $(ls "$T/o")"; rm -f "$T"/o/*; }
}
n=0
for f in "$T"/cm/*.mpk.zst; do
    check_case 3 "$f" "$(basename "$f")"
    n=$((n + 1))
done
[ $n -ge 50 ] || fail "only $n corrupt cases"
for c in truncated_12 flipped_5 huge_map_count deep_nesting empty not_zstd; do # via stdin
    expect_rc 3 inspect - <"$T/cm/$c.mpk.zst" && expect_one_error_line
    grep -q "<stdin>" "$T/err" || fail "stdin $c: no stream name: $(cat "$T/err")"
done
check_case 4 "$T/missing.mpk.zst" missing.mpk.zst
check_case 4 "$T/cm" "$T/cm"
grep -q directory "$T/err" || fail "directory: $(cat "$T/err")"
# a good stream exported to a path that cannot be written: I/O error, nothing left
${BUILD:-build}/helpers/rec-gen "$T/good.mpk.zst"
expect_rc 4 inspect --tensor f4 -o "$T/o/no/such/dir.npy" "$T/good.mpk.zst" && expect_one_error_line
expect_rc 4 inspect --tensor f4 -o "$T/o" "$T/good.mpk.zst" && expect_one_error_line
[ -z "$(ls -A "$T/o")" ] || fail "output left behind: $(ls "$T/o")"
# a corrupt second stream after a good one: the good part is not exported either
expect_rc 3 inspect --tensor f4 -o "$out" "$T/good.mpk.zst" "$T/cm/flipped_5.mpk.zst"
[ -z "$(ls -A "$T/o")" ] || fail "output left behind after a later bad stream"
done_tests

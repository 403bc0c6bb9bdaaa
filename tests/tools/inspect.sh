#!/usr/bin/env bash
# inspect.sh - inspect's command line: --help and --version (stdout, exit 0), usage errors
# (exit 2, one error line and a hint), a missing tensor, and text output of a record.
source tests/tools/lib.sh
expect_rc 0 inspect --help && grep -q '^usage: inspect' "$T/out" || fail "--help"
expect_rc 0 inspect --version && grep -q '^inspect [0-9]' "$T/out" || fail "--version"
for args in "" "--bogus x" "--tensor w x" "-o f.npy x" "--timeout abc x" "--timeout -1 x" \
            "--producers 0 x" "--record 1x x"; do
    # shellcheck disable=SC2086
    expect_rc 2 inspect $args && expect_one_error_line
    grep -q '^hint: ' "$T/err" || fail "no hint for: $args"
done
${BUILD:-build}/helpers/rec-gen --records 2 "$T/g.mpk.zst"
expect_rc 2 inspect --tensor nope -o "$T/x.npy" "$T/g.mpk.zst" && expect_one_error_line
[ ! -e "$T/x.npy" ] || fail "output for a missing tensor"
expect_rc 2 inspect --tensor f4 --record 5 -o "$T/x.npy" "$T/g.mpk.zst"
expect_rc 0 inspect "$T/g.mpk.zst"
grep -q '^#1 update  client=0 seq=1 name="rec-1"' "$T/out" || fail "record line: $(head -1 "$T/out")"
grep -Eq '^  i4 +<i4 \[2,3,4\] +min=-49999 +max=-49838 ' "$T/out" || fail "tensor line"
expect_rc 0 inspect --no-stats "$T/g.mpk.zst" "$T/g.mpk.zst"
[ "$(grep -c '^#' "$T/out")" = 4 ] && ! grep -q min= "$T/out" || fail "--no-stats / two streams"
done_tests

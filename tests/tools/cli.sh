#!/usr/bin/env bash
# cli.sh - golden command-line tests, one case per file in tests/cli/<tool>/<name>.case
# (the zstd tests/cli-tests manner).  A case file holds "key: value" lines:
#   cmd:    the command line, tool first (run from $FEDSM_BIN; words split as bash does,
#           $T expands to a fresh empty directory of the case)
#   exit:   the expected exit code
#   stdout: the expected first line of stdout (exact; stdout-glob: a bash pattern)
#   stderr: the expected first line of stderr (exact; stderr-glob: a bash pattern); $T in
#           the actual output is replaced by the literal text $T before comparing
#   # ...   a comment
# Every case also checks the error contract (DESIGN 7): a failing command prints at most
# two lines on stderr, one "TOOL: error: ..." and at most one "hint: ..."; exit 0 prints
# no "error:" line.  Adding a tool's tests is adding tests/cli/<tool>/*.case files;
# tools/*.c without a directory here are listed as uncovered (a warning, not a failure).
# Env: CLI_CASES (a regex on "tool/name", default all).
source "$(dirname "$0")/lib.sh"
cd "$FEDSM_ROOT"
filter=${CLI_CASES:-.}
n=0
for f in tests/cli/*/*.case; do
    tool=$(basename "$(dirname "$f")") name=$(basename "$f" .case)
    [[ $tool/$name =~ $filter ]] || continue
    n=$((n + 1))
    cmd="" want_exit="" want_out="" want_err="" out_glob="" err_glob=""
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
        cmd:*) cmd=${line#cmd:} ;;
        exit:*) want_exit=${line#exit:} ;;
        stdout:*) want_out=${line#stdout: } ;;
        stderr:*) want_err=${line#stderr: } ;;
        stdout-glob:*) out_glob=${line#stdout-glob: } ;;
        stderr-glob:*) err_glob=${line#stderr-glob: } ;;
        '#'* | '') ;;
        *) fail "$f: unknown line: $line" ;;
        esac
    done <"$f"
    want_exit=${want_exit// /}
    [ -n "$cmd" ] && [ -n "$want_exit" ] || { fail "$f: needs cmd: and exit:"; continue; }
    d="$T/$tool-$name"
    mkdir -p "$d"
    # the case files are ours: the command line is split (and $T expanded) by bash itself
    root_t=$T T=$d
    eval "args=($cmd)" 2>/dev/null || { T=$root_t; fail "$f: cannot split cmd: $cmd"; continue; }
    T=$root_t
    bin=$FEDSM_BIN/${args[0]}
    [ -x "$bin" ] || { fail "$f: no binary $bin"; continue; }
    (cd "$d" && "$bin" "${args[@]:1}" >"$d.out" 2>"$d.err" </dev/null)
    rc=$?
    out1=$(head -n 1 "$d.out" | tr -d '\0') err1=$(head -n 1 "$d.err")
    err1=${err1//$d/\$T} out1=${out1//$d/\$T}
    what="$tool/$name ($cmd)"
    [ "$rc" = "$want_exit" ] || fail "$what: exit $rc, expected $want_exit; stderr: $err1"
    [ -z "$want_out" ] || [ "$out1" == "$want_out" ] ||
        fail "$what: stdout line 1: '$out1', expected '$want_out'"
    [ -z "$out_glob" ] || [[ $out1 == $out_glob ]] ||
        fail "$what: stdout line 1: '$out1' does not match '$out_glob'"
    [ -z "$want_err" ] || [ "$err1" == "$want_err" ] ||
        fail "$what: stderr line 1: '$err1', expected '$want_err'"
    [ -z "$err_glob" ] || [[ $err1 == $err_glob ]] ||
        fail "$what: stderr line 1: '$err1' does not match '$err_glob'"
    lines=$(wc -l <"$d.err")
    if [ "$rc" != 0 ]; then
        [ "$lines" -le 2 ] || fail "$what: $lines lines on stderr (at most an error and a hint)"
        [[ $err1 == "$tool: error: "* ]] || fail "$what: stderr line 1 is not '$tool: error: ...'"
        second=$(sed -n 2p "$d.err")
        [ -z "$second" ] || [[ $second == "hint: "* ]] || fail "$what: stderr line 2 is not a hint: $second"
        [ -z "$(ls -A "$d")" ] || fail "$what: a failed command left files: $(ls -A "$d")"
    elif grep -q 'error:' "$d.err"; then
        fail "$what: exit 0 with an error line"
    fi
done
[ "$n" -gt 0 ] || fail "no cases matched '$filter'"
for src in tools/*.c; do
    t=$(basename "$src" .c)
    [ -d "tests/cli/$t" ] || echo "warning: tools/$t.c has no tests/cli/$t/*.case" >&2
done
echo "$n cases"
done_tests

#!/usr/bin/env bash
# tests/mutants.sh - mutation testing: applies each small, realistic bug of tests/mutants.txt
# (one at a time) to a scratch copy of the committed tree, builds it, runs the tests the
# mutant names, and prints "killed" or "SURVIVED" per mutant, then the score.  Exits 1 when
# the score is below MUTANTS_THRESHOLD percent (default 90), 2 on a bad mutant list or a
# baseline that does not pass.  Never touches the live checkout (others edit it): the copy
# is `git archive` of a commit (MUTANTS_REV, default HEAD) in a temp folder, or with
# MUTANTS_REV=worktree a copy of the checkout's files as they are now (committed or not).  Slow: one
# rebuild of one file plus the named tests per mutant (`make mutants`; not in `make test`);
# per mutant only the named unit tests are relinked, everything only when a tool test is named.
#
# Usage: tests/mutants.sh [ID-REGEX]     (run only the mutants whose id matches)
# Env: MUTANTS_REV (commit, default HEAD), MUTANTS_THRESHOLD (percent, default 90),
#      MUTANTS_DIR (scratch folder, default a new /tmp/fedsm-mutants.XXXXXX, removed at the
#      end unless MUTANTS_KEEP=1), JOBS (make -j, default 2), MUTANTS_TIMEOUT (seconds per
#      test run, default 900), FEDSM_SHARED_DATA (real vocabulary / CIFAR-10 JPEGs; default
#      the checkout's ../shared/data, as an absolute path since the copy lies elsewhere).
#
# tests/mutants.txt: one mutant a line, five fields separated by TABs:
#   id  file  search  replacement  tests-regex
# `search` must occur exactly once in `file`; when `file` no longer exists or no longer holds
# it (code moves between lib/ layers and files), the file is the one of lib/ tools/ pipelines/ that holds `search`
# (git grep -F), which must be unique too.  In search and replacement, \t stands for a TAB
# and \\ for a backslash.  tests-regex is tests/run.sh's TESTS filter.  Lines starting with
# # are comments.  A mutant that does not build is reported as "stillborn" and left out of
# the score (a list error to fix, not a kill).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIST=$ROOT/tests/mutants.txt
REV=${MUTANTS_REV:-HEAD}
THRESHOLD=${MUTANTS_THRESHOLD:-90}
JOBS=${JOBS:-2}
TMO=${MUTANTS_TIMEOUT:-900}
PICK=${1:-.}
if [ -z "${FEDSM_SHARED_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
    FEDSM_SHARED_DATA=$(cd "$ROOT/../shared/data" && pwd)
fi
export FEDSM_SHARED_DATA=${FEDSM_SHARED_DATA:-/nonexistent}
PY=python3
command -v $PY >/dev/null || PY=/usr/bin/python3

W=${MUTANTS_DIR:-$(mktemp -d /tmp/fedsm-mutants.XXXXXX)}
rm -rf "$W/src" # a kept MUTANTS_DIR may hold objects of a mutant an interrupted run left applied
mkdir -p "$W/src"
[ "${MUTANTS_KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
if [ "$REV" = worktree ]; then # the live files as they are now (tracked and new, not ignored)
    (cd "$ROOT" && git ls-files -z -c -o --exclude-standard | tar --null -T - -cf -) | tar -x -C "$W/src" \
        || { echo "mutants: cannot copy the working tree" >&2; exit 2; }
else
    git -C "$ROOT" archive "$REV" | tar -x -C "$W/src" || { echo "mutants: cannot export $REV" >&2; exit 2; }
fi
cd "$W/src" || exit 2
git init -q . && git add -A >/dev/null 2>&1 # for git grep -F when a file has moved
BUILD=build-mutants
log=$W/log
mkdir -p "$log"

build() { make BUILD=$BUILD -j"$JOBS" all >"$1" 2>&1; }
# build_for REGEX LOGFILE: only what the tests of REGEX run: the unit test binaries it names,
# or everything (`all`: tools, helpers, gen-demo) when it names a tool test.  A mutant of a
# file none of them links cannot be killed by them anyway.
build_for() {
    local t targets=() tools=0
    for t in tests/unit/test_*.c; do
        t=$(basename "$t" .c)
        [[ unit/$t =~ $1 ]] && targets+=("$BUILD/tests/$t")
    done
    for t in tests/tools/*.sh; do
        t=$(basename "$t" .sh)
        case $t in lib*) continue;; esac
        [[ tools/$t =~ $1 ]] && tools=1
    done
    [ $tools = 0 ] && [ ${#targets[@]} -gt 0 ] || targets=(all)
    make BUILD=$BUILD -j"$JOBS" "${targets[@]}" >"$2" 2>&1
}
# run_tests REGEX LOGFILE [FAIL_FAST]: 0 when every selected test passed or skipped, 1 when
# one failed (with FAIL_FAST=1, as for a mutant, the tests stop at the first failure: the
# unit tests run first, so a mutant they kill costs seconds, not the tool tests' minutes)
run_tests() {
    BUILD=$BUILD FUZZ_SECONDS=0 TESTS="$1" FAIL_FAST=${3:-0} timeout "$TMO" tests/run.sh >"$2" 2>&1
    local rc=$?
    grep -q ' 0 failed' "$2" && [ $rc = 0 ] && return 0
    return 1
}

# the mutants, parsed and checked up front
ids=() files=() finds=() repls=() regs=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno+1))
    case $line in ''|'#'*) continue;; esac
    IFS=$'\t' read -r id file find repl reg extra <<<"$line"
    if [ -z "${reg:-}" ] || [ -n "${extra:-}" ]; then
        echo "mutants: $LIST:$lineno: expected 5 TAB-separated fields" >&2; exit 2
    fi
    [[ $id =~ $PICK ]] || continue
    ids+=("$id") files+=("$file") finds+=("$find") repls+=("$repl") regs+=("$reg")
done <"$LIST"
[ ${#ids[@]} -gt 0 ] || { echo "mutants: no mutant matches '$PICK'" >&2; exit 2; }

# apply FILE FIND REPL: rewrites FILE; prints why and returns 1 when FIND is not there once
apply() {
    $PY - "$@" <<'PY'
import sys
path, find, repl = sys.argv[1:4]
un = lambda s: s.replace("\\\\", "\0").replace("\\t", "\t").replace("\0", "\\")
find, repl = un(find), un(repl)
text = open(path, encoding="utf-8").read()
n = text.count(find)
if n != 1:
    print(f"{path}: search string found {n} times"); sys.exit(1)
open(path, "w", encoding="utf-8").write(text.replace(find, repl))
PY
}
locate() { # FILE FIND: the file to mutate (FILE, or where FIND went when it moved)
    local s; s=$($PY -c 'import sys; print(sys.argv[1].replace("\\\\","\0").replace("\\t","\t").replace("\0","\\"), end="")' "$2")
    if [ -f "$1" ] && grep -q -F -e "$s" "$1"; then echo "$1"; return 0; fi
    local hits; hits=$(git grep -l -F -e "$s" -- lib tools pipelines)
    [ "$(printf '%s\n' "$hits" | grep -c .)" = 1 ] || { echo "no unique file holds it" >&2; return 1; }
    echo "$hits"
}

echo "mutants: ${#ids[@]} mutants of $( [ "$REV" = worktree ] && echo worktree || git -C "$ROOT" rev-parse --short "$REV") in $W/src"
echo "baseline: building"
build "$log/baseline-build.log" || { echo "mutants: the unmutated tree does not build ($log/baseline-build.log)" >&2; exit 2; }
# the baseline must pass every test a mutant names (a kill by a failing test means nothing)
all_regs=$(printf '%s\n' "${regs[@]}" | sort -u | paste -sd'|')
echo "baseline: running $all_regs"
if ! run_tests "$all_regs" "$log/baseline.log"; then
    echo "mutants: the unmutated tree fails tests:" >&2; grep -E '^FAIL' "$log/baseline.log" >&2; exit 2
fi
grep -E '^SKIP' "$log/baseline.log" | sed 's/^/baseline: /'

killed=0 survived=0 stillborn=0 survivors=()
for i in "${!ids[@]}"; do
    id=${ids[$i]}
    f=$(locate "${files[$i]}" "${finds[$i]}") || { echo "stillborn $id: ${files[$i]}: search string not found"; stillborn=$((stillborn+1)); continue; }
    cp -p "$f" "$W/orig"
    if ! why=$(apply "$f" "${finds[$i]}" "${repls[$i]}"); then
        echo "stillborn $id: $why"; stillborn=$((stillborn+1)); continue
    fi
    t0=$SECONDS
    if ! build_for "${regs[$i]}" "$log/$id-build.log"; then
        echo "stillborn $id: does not build ($f)"; stillborn=$((stillborn+1))
    elif run_tests "${regs[$i]}" "$log/$id.log" 1; then
        survived=$((survived+1)); survivors+=("$id")
        echo "SURVIVED $id ($f; tests ${regs[$i]}; $((SECONDS-t0)) s)"
    else
        killed=$((killed+1))
        echo "killed   $id by $(grep -E '^FAIL' "$log/$id.log" | awk '{print $2}' | paste -sd' ') ($((SECONDS-t0)) s)"
    fi
    cp "$W/orig" "$f" && touch "$f" # restore (a new mtime: make rebuilds it)
done
total=$((killed+survived))
score=$(( total ? 100 * killed / total : 0 ))
echo "score: $killed of $total killed ($score%), $stillborn stillborn"
[ ${#survivors[@]} = 0 ] || echo "survivors: ${survivors[*]}"
[ "$score" -ge "$THRESHOLD" ] || { echo "mutants: below the threshold of $THRESHOLD%"; exit 1; }

#!/usr/bin/env bash
# Pipelines under hostile options and strings (issue 15's pipeline cases): no user-given string
# is ever run as code; a bad option is one "error:" line, exit 2, before anything is created;
# labels and run folders with quotes, '$(...)', backquotes and gnuplot's system() come out
# verbatim (metrics.csv/json read back by Python's csv and json) or are refused in one line;
# TERM during evaluation exits 143 and leaves no temporary; the small scripts' --help.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
F=$FEDSM_ROOT/pipelines/fedavg.sh
mkdir -p "$T/cwd" && cd "$T/cwd" || exit 1
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
no_pwned() { local p; p=$(find "$T" / -maxdepth 1 -name 'pwned*' 2>/dev/null; find "$T" -name 'pwned*'); [ -z "$p" ] || fail "$1: something ran: $p"; }

# every bad option: exit 2, exactly one stderr line (an error: line not ending in the exit
# code), and no run folder
# (one case a line, its words separated by '|')
bad=(
    "--per-round|1.5" "--clients|1e1" "--jobs|1.5" "--eval-every|0" "--lr|abc" "--lr|-1"
    "--momentum|2" "--wd|x" "--rounds|99999999999999999999" "--clients|4|--per-round|9"
    "--alpha|0" "--if|0.5" "--split|x" "--profile|x" "--arch|resnet8\$(touch pwned)" "--bogus"
    "--force=1" "--aug|none; touch pwned; true" "--aug|\$(touch pwned)" "--label|a\nb"
    "--run|" "--data"
)
for spec in "${bad[@]}"; do
    IFS='|' read -ra args <<<"$spec"
    args=("${args[@]//\\n/$'\n'}")
    [ "$spec" != "--run|" ] || args=(--run "")
    # a small run first (a wrongly accepted case ends soon), the case's words last
    a=(--if 4 --clients 4 --per-round 1 --rounds 1 --epochs 1 --width 4 --run "$T/cwd/r")
    if [ "$spec" = --data ]; then a+=(--data); else a+=(--data "$T/data" "${args[@]}"); fi
    expect_rc 2 timeout 300 "$F" "${a[@]}" || { rm -rf "$T/cwd/r"; continue; }
    [ "$(wc -l < "$T/err")" = 1 ] || { fail "$spec: stderr is not one line:"; sed 's/^/    /' "$T/err" >&2; }
    grep -q '^fedavg: error: ' "$T/err" || fail "$spec: not an error line: $(cat "$T/err")"
    grep -q ' 2$' "$T/err" && fail "$spec: the exit code is in the message: $(cat "$T/err")"
    [ ! -e "$T/cwd/r" ] || { fail "$spec: a run folder was created"; rm -rf "$T/cwd/r"; }
done
no_pwned "bad options"
expect_rc 2 "$F" --data "$T/data" --run "$T/cwd/r" --lr 0.1x && grep -q -- "--lr: '0.1x' is not a number" "$T/err" \
    || fail "--lr message: $(cat "$T/err")"

# a run folder and a label full of shell and gnuplot syntax: the run works, nothing runs,
# the label is read back verbatim
RUN=$T/cwd/"ru'n \"\$(touch pwned1)\" \`touch pwned2\`; x"
LABEL="it's \$(touch pwned3) \`touch pwned4\` system('touch pwned5') @x {a}"
S=(--data "$T/data" --if 4 --clients 2 --per-round 1 --rounds 1 --epochs 1 --batch 32 --width 4 -q)
"$F" "${S[@]}" --run "$RUN" --label "$LABEL" >"$T/out" 2>"$T/err" || { fail "hostile run/label: exit $?"; cat "$T/err" >&2; }
no_pwned "hostile run folder and label"
$PY - "$RUN" "$LABEL" <<'PY' || fail "hostile label not read back verbatim"
import sys, csv, json
run, label = sys.argv[1], sys.argv[2]
rows = list(csv.reader(open(f'{run}/metrics.csv', newline='')))
assert rows[0][:3] == ['label', 'round', 'top1'] and len(rows) == 2, rows
assert rows[1][0] == label and rows[1][1] == '1', rows[1]
j = [json.loads(l) for l in open(f'{run}/round-001/metrics.json')]
assert j[0]['label'] == label, j
PY
if command -v gnuplot >/dev/null; then [ -s "$RUN/accuracy.png" ] || fail "no plot for the hostile run folder"; fi
[ -z "$(find "$RUN" -name '*.tmp*')" ] || fail "temporaries left: $(find "$RUN" -name '*.tmp*')"

# labels a CSV/JSON row must quote: refused in one line before any work, or written so that
# csv and json read them back (either is a kept promise; anything else is not)
for label in 'a,b' 'say "hi"' $'two\nlines' 'system("touch pwned6")' 'back\slash'; do
    rm -rf "$T/cwd/l"
    "$F" "${S[@]}" --run "$T/cwd/l" --label "$label" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc = 2 ]; then
        [ "$(wc -l < "$T/err")" = 1 ] || fail "label $label: refusal is not one line: $(cat "$T/err")"
        [ ! -e "$T/cwd/l" ] || fail "label $label: refused after creating the run folder"
    elif [ $rc = 0 ]; then
        $PY - "$T/cwd/l" "$label" <<'PY' || fail "label $label: not read back verbatim"
import sys, csv, json
run, label = sys.argv[1], sys.argv[2]
rows = list(csv.reader(open(f'{run}/metrics.csv', newline='')))
assert len(rows) == 2 and rows[1][0] == label, rows
assert json.loads(open(f'{run}/round-001/metrics.json').readline())['label'] == label
PY
    else fail "label $label: exit $rc: $(cat "$T/err")"; fi
done
no_pwned "labels"

# TERM to the pipeline alone while evaluate is writing its rows: exit 143 at once, no
# metrics.*.tmp.  The evaluate here writes its two temporaries and then hangs.
mkdir -p "$T/bin"
for t in partition aggregate local-train; do ln -s "$B/$t" "$T/bin/$t"; done
cat > "$T/bin/evaluate" <<'SH'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do case $1 in --csv|--json) echo partial > "$2"; shift ;; esac; shift; done
exec sleep 60
SH
chmod +x "$T/bin/evaluate"
FEDSM_BIN=$T/bin "$F" "${S[@]}" --run "$T/cwd/t" >/dev/null 2>"$T/err" &
pid=$!
for i in $(seq 1 1200); do [ -f "$T/cwd/t/round-001/metrics.json.tmp" ] && break; sleep 0.05; done
[ -f "$T/cwd/t/round-001/metrics.json.tmp" ] || fail "the evaluation never started"
t0=$SECONDS
kill -TERM $pid; wait $pid; rc=$?
[ $rc = 143 ] || fail "TERM during evaluation: exit $rc, not 143: $(cat "$T/err")"
[ $((SECONDS - t0)) -lt 20 ] || fail "TERM waited for the evaluation to end"
left=$(find "$T/cwd/t" -name '*.tmp*'); [ -z "$left" ] || fail "temporaries left after TERM: $left"
pgrep -f "sleep 60" -P $$ >/dev/null && fail "the evaluation outlived the pipeline"

# the small scripts: --help on stdout, exit 0; missing values are one line, exit 2
expect_rc 0 "$FEDSM_ROOT/pipelines/table.sh" --help && grep -q '^usage: table.sh' "$T/out" || fail "table.sh --help"
expect_rc 0 "$FEDSM_ROOT/pipelines/cifar10-lt-fedavg.sh" --help && ! grep -q 'source\|dirname' "$T/out" || fail "cifar10-lt-fedavg.sh --help: $(cat "$T/out")"
expect_rc 2 "$FEDSM_ROOT/pipelines/cifar10-lt-fedavg.sh" --rounds && expect_one_error_line
expect_rc 2 "$FEDSM_ROOT/pipelines/cifar10-lt-fedavg.sh" --jobs 1.5 && expect_one_error_line
expect_rc 2 "$FEDSM_ROOT/pipelines/demo.sh" --run && expect_one_error_line
# make demo DATA=...: the value reaches demo.sh whole (here a missing dataset named in full),
# nothing of it runs (MAKE=true: no build; DEB_DEMO empty: no package check)
bad="$T/d a'\"; touch $T/pwned-make \$(touch $T/pwned-make2) \`touch $T/pwned-make3\`"
DEMO_RUN="$T/demo-run" make -s -C "$FEDSM_ROOT" demo DATA="$bad" MAKE=true DEB_DEMO= BUILD="${BUILD:-build}" >"$T/out" 2>"$T/err"
grep -qF "dataset $bad does not exist" "$T/err" || fail "make demo DATA= split or changed the value: $(cat "$T/err")"
no_pwned "make demo DATA="
expect_rc 0 "$FEDSM_ROOT/pipelines/table.sh" "$RUN" && grep -q "^| [^|]* | ru'n" "$T/out" || fail "table.sh on the hostile run: $(cat "$T/out" "$T/err")"

# no script of pipelines/ or bench/ runs a built string as code
# (eval where a command starts; bash -c / sh -c anywhere outside a comment)
hits=$(grep -nE '((^|[;&|(`{]|\$\(|then|do|else)[[:space:]]*(command[[:space:]]+|builtin[[:space:]]+)?eval([[:space:]]|$))|(^|[^[:alnum:]_-])(ba)?sh[[:space:]]+-c([^[:alnum:]_-]|$)' \
    "$FEDSM_ROOT"/pipelines/*.sh "$FEDSM_ROOT"/bench/*.sh | grep -vE '^[^:]*:[0-9]+:[[:space:]]*#')
[ -z "$hits" ] || fail "eval / bash -c in a pipeline or bench script: $hits"
no_pwned "end"
done_tests

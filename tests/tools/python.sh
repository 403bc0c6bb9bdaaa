#!/usr/bin/env bash
# python.sh - python/fedsm.py against the C tools both ways, and a user's aggregation rule in
# fedavg.sh (issue 14); the checks themselves are tests/tools/pycompanion.py:
# - records: read_records over C's multi-record streams (every dtype and meta type, against
#   gen.py's formulas; concatenated, skippable frames, no end record), write_records read by
#   C's rec-check with every value checked, the whole corrupt-input matrix refused as
#   FormatError naming the stream, refused writes leave nothing;
# - kinds: write_record of every kind a tool reads (model, update, shard, partition,
#   teacher, features, prototypes, gradients, class embeddings) is read by that tool, with
#   numpy checks of aggregate --prototypes / --gradients on them;
# - torch (skipped without python3-torch): a local-train update loaded with load_model gives
#   evaluate's top-1, confusion matrix and loss (1e-4 relative); every architecture built in
#   PyTorch (resnet8, cifar-resnet depth 14 with proj, resnet50 with proj) saved with
#   save_model gives evaluate's results again and loads back identical; save_model(like=)
#   feeds local-train -m, aggregate -m, and as an update aggregate (numpy-checked weights);
# - fedavg.sh --aggregate-cmd python/examples/median_aggregate.py (through a wrapper in a
#   folder with a space that logs its argv and keeps the updates): 2 rounds, round 1's model
#   is numpy's median of its updates, the argv is -m PREV -o OUT UPDATE...; a resumed round
#   ends byte-identical; bad commands (missing, not executable, shell metacharacters) exit 2
#   before any work; a failing one exits 1, and outputs that are not one model record of the
#   round with the model's tensors exit 3; one error line each, no model or temporary left.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
PIPE=$FEDSM_ROOT/pipelines
PC=$FEDSM_ROOT/tests/tools/pycompanion.py
MEDIAN=$FEDSM_ROOT/python/examples/median_aggregate.py
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "Debian python3 with numpy, msgpack, zstandard needed"
export FEDSM_BIN=$B PYTHONPATH=$FEDSM_ROOT/python
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 4 --clients 4 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/m0.mpk.zst" -q || fail "init"

$PY "$PC" records "$T" || fail "records"
$PY "$PC" kinds "$T" || fail "kinds"
expect_rc 0 $PY "$FEDSM_ROOT/python/fedsm.py" "$T/m0.mpk.zst" && grep -q '^  fc.weight <f4 \[10, 16\]' "$T/out" \
    || fail "fedsm.py STREAM: $(head -c 300 "$T/out")"
expect_rc 3 $PY "$FEDSM_ROOT/python/fedsm.py" "$T/cm/bad_kind.mpk.zst" && expect_one_error_line
expect_rc 0 $PY "$FEDSM_ROOT/python/fedsm.py" --help && grep -q '^usage: fedsm.py' "$T/out" || fail "fedsm.py --help"

if $PY -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' 2>/dev/null; then
    # a model that has learnt something (about 55 % top-1): all the training data, 6 epochs
    "$B/partition" --in "$T/data" -o "$T/p1" --if 4 --clients 1 -q || fail "partition (1 client)"
    "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p1/client-00.mpk.zst" --epochs 6 --batch 16 -o "$T/u0.mpk.zst" -q \
        || fail "local-train"
    "$B/evaluate" -m "$T/u0.mpk.zst" --test "$T/p/test.mpk.zst" --threads 1 -o "$T/met-u0.mpk.zst" -q || fail "evaluate"
    $PY "$PC" torch "$T" || fail "torch"
else
    skip_check "python3-torch is not installed: load_model/save_model against evaluate not checked"
fi

# ---- fedavg.sh --aggregate-cmd ----
expect_rc 0 "$MEDIAN" --help && grep -q '^usage: median_aggregate.py' "$T/out" || fail "median_aggregate.py --help"
mkdir -p "$T/my cmds" "$T/kept"
cat >"$T/my cmds/agg" <<EOF
#!/usr/bin/env bash
# logs its argv, keeps a copy of each update (fedavg.sh may delete them), runs the example
printf '%s\n' "\$@" >>"$T/argv.log"
for u in "\${@:5}"; do cp "\$u" "$T/kept/\$(basename "\$(dirname "\$u")")-\$(basename "\$u")"; done
exec "$MEDIAN" "\$@"
EOF
chmod +x "$T/my cmds/agg"
A=(--data "$T/data" --if 4 --clients 4 --per-round 3 --epochs 1 --batch 16 --width 4 -q)
"$PIPE/fedavg.sh" "${A[@]}" --rounds 2 --run "$T/run" --aggregate-cmd "$T/my cmds/agg" >/dev/null || fail "fedavg.sh --aggregate-cmd"
[ "$(wc -l <"$T/run/metrics.csv")" = 3 ] || fail "metrics.csv: $(cat "$T/run/metrics.csv")"
grep -qx "aggregate_cmd=$T/my cmds/agg" "$T/run/config.txt" || fail "config.txt: $(cat "$T/run/config.txt")"
$PY "$PC" median "$T" "$T/run" "$T/kept" || fail "median"
# argv: -m PREV -o R/model.tmp.PID.mpk.zst then the round's updates, one argument each
mapfile -t argv <"$T/argv.log"
[ "${argv[0]}" = -m ] && [ "${argv[1]}" = "$T/run/round-000/model.mpk.zst" ] && [ "${argv[2]}" = -o ] &&
    [[ ${argv[3]} =~ ^$T/run/round-001/model\.tmp\.[0-9]+\.mpk\.zst$ ]] &&
    [[ ${argv[4]} =~ ^$T/run/round-001/update-0[0-3]\.mpk\.zst$ ]] && [ "${#argv[@]}" = 14 ] &&
    [ "${argv[8]}" = "$T/run/round-001/model.mpk.zst" ] && [[ ${argv[11]} =~ ^$T/run/round-002/update- ]] \
    || fail "argv: ${argv[*]}"
ls "$T"/run/round-00*/*.tmp* 2>/dev/null && fail "temporaries left"
# resume: round 2's model again (its updates back in place): byte-identical
cp "$T/run/round-002/model.mpk.zst" "$T/m2.mpk.zst"
rm -f "$T/run/round-002/model.mpk.zst" "$T/run/round-002/metrics.csv"
for u in "$T"/kept/round-002-*; do cp "$u" "$T/run/round-002/${u##*/round-002-}"; done
echo garbage >"$T/run/round-002/model.tmp.999999.mpk.zst"   # a killed run's temporary
"$PIPE/fedavg.sh" "${A[@]}" --rounds 2 --run "$T/run" --aggregate-cmd "$T/my cmds/agg" >/dev/null || fail "resume"
cmp -s "$T/m2.mpk.zst" "$T/run/round-002/model.mpk.zst" || fail "resumed round 2 differs"
[ ! -e "$T/run/round-002/model.tmp.999999.mpk.zst" ] || fail "stale temporary kept"

# bad commands: exit 2 before any work, one line, nothing created, nothing run
printf '#!/bin/sh\ntouch "%s/ran"\n' "$T" >"$T/noexec"
for bad in "$T/missing" "$T/noexec" "$T/my cmds" "no-such-program-$$" "sh -c 'touch $T/ran'" "x;touch $T/ran"; do
    expect_rc 2 "$PIPE/fedavg.sh" "${A[@]}" --rounds 1 --run "$T/bad" --aggregate-cmd "$bad" && expect_one_error_line
    grep -q -- '--aggregate-cmd' "$T/err" || fail "$bad: message: $(cat "$T/err")"
done
[ ! -e "$T/bad" ] && [ ! -e "$T/ran" ] || fail "a refused --aggregate-cmd created or ran something"
# commands that fail or write what is not the round's model: exit 1 / 3, one error line
# from fedavg.sh, no round-001 model, no temporary (run on a copy with round 1 undone and
# its updates back in place, so that nothing retrains)
cat >"$T/fails" <<'EOF'
#!/bin/sh
echo "fails: something went wrong" >&2; exit 1
EOF
cat >"$T/nothing" <<'EOF'
#!/bin/sh
exit 0
EOF
cat >"$T/update" <<'EOF'
#!/bin/sh
cp "$5" "$4"     # an update, not a model
EOF
cat >"$T/oldround" <<'EOF'
#!/bin/sh
cp "$2" "$4"     # the previous model: round 0
EOF
cat >"$T/garbage" <<'EOF'
#!/bin/sh
echo "not a record" >"$4"
EOF
cat >"$T/missing1" <<EOF
#!$PY
# the round's model without its first tensor
import sys, fedsm
r = fedsm.read_record(sys.argv[2]); r.meta["round"] = 1
fedsm.write_record(sys.argv[4], "model", r.meta, dict(list(r.tensors.items())[1:]))
EOF
chmod +x "$T/fails" "$T/nothing" "$T/update" "$T/oldround" "$T/garbage" "$T/missing1"
cp -al "$T/run" "$T/c"   # hard links: every write in a run is a new file renamed into place
rm -rf "$T/c/round-001/model.mpk.zst" "$T/c/round-001/metrics.csv" "$T/c/round-002"
for u in "$T"/kept/round-001-*; do cp "$u" "$T/c/round-001/${u##*/round-001-}"; done
for c in fails:1:failed nothing:3:wrote.no garbage:3:invalid.stream update:3:not.one.model oldround:3:meta.round \
         missing1:3:tensors; do
    IFS=: read -r name want msg <<<"$c"
    sed -i "s|^aggregate_cmd=.*|aggregate_cmd=$T/$name|" "$T/c/config.txt"
    expect_rc "$want" "$PIPE/fedavg.sh" "${A[@]}" --rounds 1 --run "$T/c" --aggregate-cmd "$T/$name" || continue
    n=$(grep -c '^fedavg: error:' "$T/err")
    [ "$n" = 1 ] && grep -q "^fedavg: error: --aggregate-cmd $name .*$msg" "$T/err" || fail "$name: $(cat "$T/err")"
    [ ! -e "$T/c/round-001/model.mpk.zst" ] || fail "$name: a model was left"
    ls "$T"/c/round-001/*.tmp* 2>/dev/null && fail "$name: temporary left"
done
done_tests

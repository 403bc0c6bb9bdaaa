#!/usr/bin/env bash
# traps.sh - the traps of a first hour (issue 14), each on tiny runs:
# (a) a run is never resumed with other options: refused (exit 2, the run untouched), or with
#     --force moved aside to RUN.old-1 and started afresh (re-partitioned), saying so;
# (b) the clients' per-round files are deleted once their round is complete (--keep-updates
#     keeps them), and a resume that only evaluates a complete round (another --eval-every)
#     trains no client again;
# (c) table.sh: method, width, seed columns; runs that differ only by seed are one row of
#     mean ± std (--per-run: one row each); RUN/class-accuracy.csv holds metrics.json's
#     per-class values under the partition's class names;
# (d) FedSM refuses a resume under another retraining schedule;
# (e) partition -o into a missing folder fails before reading the data; gen-demo --version
#     and unknown options create nothing;
# (f) evaluate and local-train refuse a shard of other classes (as many, other names),
#     evaluate -v prints class names, evaluate --csv into a missing folder fails first;
# (g) a run resumed with a lower --rounds reports only its rounds (the later ones stay on
#     disk for a later resume, out of metrics.csv, class-accuracy.csv and the summary), and
#     one resumed under another --label has every metrics.csv row under the new label.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
PIPE=$FEDSM_ROOT/pipelines
cd "$T"

# (e) first: no runs needed
expect_rc 0 "$B/gen-demo" --version && grep -q '^gen-demo [0-9]' "$T/out" || fail "gen-demo --version: $(cat "$T/out")"
expect_rc 2 "$B/gen-demo" --bogus && expect_one_error_line
expect_rc 2 "$B/gen-demo" x 12 && expect_one_error_line       # not a multiple of 5
expect_rc 2 "$B/gen-demo" x 10 abc && expect_one_error_line
[ -z "$(ls "$T" | grep -vx "err\|out")" ] || fail "gen-demo left files for --version or a refused call: $(ls "$T")"
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
expect_rc 4 "$B/partition" --in "$T/data" -o "$T/no/such/p" --if 4 --clients 4 -q && expect_one_error_line
grep -q "cannot create --out-dir $T/no/such/p: folder $T/no/such: No such file" "$T/err" ||
    fail "partition -o into a missing folder: $(cat "$T/err")"
[ -z "$(ls -d "$T"/no* 2>/dev/null)" ] || fail "partition created folders for a refused -o"
# inspect --tensor -o: the folder is checked before the stream is read (here: a missing one)
expect_rc 4 "$B/inspect" --tensor fc.weight -o "$T/no/x.npy" "$T/missing.mpk.zst" &&
    grep -q "folder $T/no: No such file" "$T/err" || fail "inspect -o into a missing folder: $(cat "$T/err")"

P=(--data "$T/data" --if 4 --clients 4 --per-round 2 --rounds 2 --epochs 1 --batch 16 --width 4 --jobs 2)

# (a) other options: refused, the run untouched; --force: moved aside, afresh.  The first
# run keeps its updates (b), and, moved aside to r.old-1, is (c)'s seed-7 run.
"$PIPE/fedavg.sh" "${P[@]}" -q --keep-updates --run "$T/r" >/dev/null || fail "fedavg.sh"
[ "$(ls "$T"/r/round-00[12]/update-*.mpk.zst | wc -l)" = 4 ] || fail "--keep-updates: $(ls "$T"/r/round-*)"
snap() { find "$1" -type f ! -name .lock -printf '%P %T@ %s\n' | sort; }
before=$(snap "$T/r")
expect_rc 2 "$PIPE/fedavg.sh" "${P[@]}" -q --run "$T/r" --if 2 && grep -q "cannot be resumed" "$T/err" ||
    fail "a changed --if was not refused: $(cat "$T/err")"
[ "$(snap "$T/r")" = "$before" ] || fail "a refused resume changed the run"
expect_rc 0 "$PIPE/fedavg.sh" "${P[@]}" -q --run "$T/r" --if 2 --force
grep -q "moved it to $T/r.old-1; starting afresh" "$T/err" || fail "--force did not say it restarts: $(cat "$T/err")"
[ "$(snap "$T/r.old-1")" = "$before" ] && grep -qx 'if=4' "$T/r.old-1/config.txt" || fail "--force lost or changed the old run"
grep -qx 'if=2' "$T/r/config.txt" || fail "--force kept the old config.txt"
cmp -s "$T/r/partition/partition.csv" "$T/r.old-1/partition/partition.csv" && fail "--force kept the old partition (IF 4) for IF 2"
[ "$(wc -l < "$T/r/metrics.csv")" = 3 ] || fail "--force run's metrics.csv: $(cat "$T/r/metrics.csv")"
# the same data named another way is the same run (no refusal)
(cd "$T" && "$PIPE/fedavg.sh" --data ./data "${P[@]:2}" -q --run r --if 2 >/dev/null) || fail "./data refused as other data"

# (b) pruned by default; a resume that only evaluates a complete round trains nothing
ls "$T"/r/round-00[12]/update-* >/dev/null 2>&1 && fail "updates of complete rounds were kept by default"
[ -f "$T/r/round-001/model.mpk.zst" ] && [ -f "$T/r/round-002/metrics.json" ] || fail "pruning took the models or metrics"
"$PIPE/fedavg.sh" "${P[@]}" -q --seed 8 --run "$T/k" >/dev/null || fail "fedavg.sh --seed 8"
# round 1 not evaluated (as under another --eval-every or --rounds): the resume evaluates it
# and must not train its clients again (their updates are gone)
rm -f "$T/k/round-001/metrics.csv"
"$PIPE/fedavg.sh" "${P[@]}" --seed 8 --run "$T/k" >/dev/null 2>"$T/err" || fail "resume to evaluate round 1"
grep -q "local-train: client" "$T/err" && fail "evaluating a complete round trained its clients again: $(grep local-train "$T/err")"
[ -f "$T/k/round-001/metrics.csv" ] || fail "round 1 was not evaluated on the resume"

# (c) table.sh over seeds; class-accuracy.csv
mv "$T/r.old-1" "$T/s7"
expect_rc 0 "$PIPE/table.sh" "$T/s7" "$T/k"
head -n 1 "$T/out" | grep -q '^| method | run | dataset | IF | width | seed | rounds | final | last 10 | best | many | medium | few |$' ||
    fail "table.sh header: $(head -n 1 "$T/out")"
rows=$(grep -c '^| fedavg |' "$T/out")
[ "$rows" = 1 ] && grep -q '^| fedavg | s7, k | data | 4 | 4 | 7, 8 | 2 | [0-9.]* ± [0-9.]* |' "$T/out" ||
    fail "two seeds are not one mean ± std row: $(cat "$T/out")"
expect_rc 0 "$PIPE/table.sh" --per-run "$T/s7" "$T/k"
[ "$(grep -c '^| fedavg |' "$T/out")" = 2 ] && ! grep -q '±' "$T/out" || fail "table.sh --per-run: $(cat "$T/out")"
$PY - "$T/s7" <<'PY' || fail "class-accuracy.csv"
import csv, json, glob, sys
run = sys.argv[1]
rows = list(csv.reader(open(f"{run}/class-accuracy.csv")))
names = next(csv.reader(open(f"{run}/partition/partition.csv")))[3:]
assert rows[0] == ["round"] + names, rows[0]
want = [json.loads(open(f).readline()) for f in sorted(glob.glob(f"{run}/round-*/metrics.json"))]
assert len(rows) == 1 + len(want), len(rows)
for row, m in zip(rows[1:], want):
    assert int(row[0]) == m["round"], (row, m["round"])
    got = [float(x) if x else -1.0 for x in row[1:]]
    assert all(abs(a - b) < 1e-9 for a, b in zip(got, m["per_class"])), (got, m["per_class"])
PY
if command -v gnuplot >/dev/null; then
    [ -s "$T/s7/accuracy.png" ] && [ -s "$T/s7/class-accuracy.png" ] || fail "no accuracy.png or class-accuracy.png"
else
    skip_check "gnuplot not installed: plots not checked"
fi

# (f) evaluate and local-train refuse a shard (and evaluate a partition) of other classes,
# even as many of them; evaluate -v names the classes; --csv into a missing folder fails first
cp -r "$T/data" "$T/data2"
tac "$T/data/batches.meta.txt" >"$T/data2/batches.meta.txt"      # the same 10 names, reversed
"$B/partition" --in "$T/data2" -o "$T/p2" --if 4 --clients 4 -q || fail "partition of data2"
M2=$T/s7/round-002/model.mpk.zst
expect_rc 3 "$B/evaluate" -m "$M2" --test "$T/p2/test.mpk.zst" --csv "$T/x.csv" && expect_one_error_line
grep -q "the model (stream .*) and the test shard (stream .*) name other classes (field meta.classes): class 0 is 'ring' in the model, 'grid' in the test shard" "$T/err" ||
    fail "evaluate on other classes: $(cat "$T/err")"
[ ! -e "$T/x.csv" ] || fail "a refused evaluate wrote its CSV"
expect_rc 3 "$B/evaluate" -m "$M2" --test "$T/s7/partition/test.mpk.zst" -p "$T/p2/partition.mpk.zst" --csv "$T/x.csv" &&
    grep -q "and the partition (stream .*) name other classes" "$T/err" || fail "evaluate -p of other classes: $(cat "$T/err")"
expect_rc 3 "$B/local-train" -m "$M2" -d "$T/p2/client-00.mpk.zst" --epochs 1 -o "$T/u.mpk.zst" && expect_one_error_line
grep -q "name other classes" "$T/err" || fail "local-train on other classes: $(cat "$T/err")"
expect_rc 0 "$B/evaluate" -m "$M2" --test "$T/s7/partition/test.mpk.zst" -p "$T/s7/partition/partition.mpk.zst" -v
grep -q "evaluate: class 0 ring: [0-9.]* % of 10 test images, [0-9]* training images" "$T/err" &&
    grep -q "evaluate: class 9 grid: " "$T/err" || fail "evaluate -v does not name the classes: $(cat "$T/err")"
# (before the work: the test shard of other classes would be exit 3)
expect_rc 4 "$B/evaluate" -m "$M2" --test "$T/p2/test.mpk.zst" --csv "$T/none/x.csv" && expect_one_error_line

# (d) FedSM: a resume with more --rounds would retrain other rounds (the last
# --retrain-rounds): refused, as round 2 was retrained (--body: no training here)
M=(--select uniform --per-class 3 --head-epochs 1 --retrain-rounds 1 --body "$T/s7")
"$PIPE/fedsm.sh" "${P[@]}" -q "${M[@]}" --run "$T/f" >/dev/null || fail "fedsm.sh --body"
expect_rc 2 "$PIPE/fedsm.sh" "${P[@]}" --rounds 3 -q "${M[@]}" --run "$T/f" &&
    grep -q "round 2 was done under another retraining schedule" "$T/err" || fail "fedsm: changed schedule not refused: $(cat "$T/err")"
# with --force (here one round: round 1, evaluated as FedAvg's, would now retrain): moved
# aside, and the fresh run has its config.txt
expect_rc 0 "$PIPE/fedsm.sh" "${P[@]}" --rounds 1 -q "${M[@]}" --force --run "$T/f" &&
    grep -q "round 1 was done under another retraining schedule.*moved it to $T/f.old-1" "$T/err" ||
    fail "fedsm --force on another schedule: $(cat "$T/err")"
cmp -s "$T/f/config.txt" "$T/f.old-1/config.txt" && [ -f "$T/f/round-001/retrained.mpk.zst" ] ||
    fail "fedsm --force: the fresh run lacks its config.txt or round 1's retrained model"
# (g) the 2-round seed-8 run "k", resumed with --rounds 1
expect_rc 0 "$PIPE/fedavg.sh" "${P[@]}" --rounds 1 --seed 8 --run "$T/k"
grep -q '^fedavg: rounds 1  final' "$T/out" || fail "--rounds 1 summary: $(cat "$T/out")"
[ "$(cut -d, -f2 "$T/k/metrics.csv" | tr '\n' ' ')" = "round 1 " ] || fail "--rounds 1 metrics.csv: $(cat "$T/k/metrics.csv")"
[ "$(cut -d, -f1 "$T/k/class-accuracy.csv" | tr '\n' ' ')" = "round 1 " ] || fail "--rounds 1 class-accuracy.csv: $(cut -d, -f1 "$T/k/class-accuracy.csv")"
[ -f "$T/k/round-002/model.mpk.zst" ] || fail "--rounds 1 removed round 2"
expect_rc 0 "$PIPE/fedavg.sh" "${P[@]}" --seed 8 --run "$T/k" --label renamed
[ "$(cut -d, -f2 "$T/k/metrics.csv" | tr '\n' ' ')" = "round 1 2 " ] || fail "back to --rounds 2: $(cat "$T/k/metrics.csv")"
# ... under another --label: every row carries the new one
[ "$(cut -d, -f1 "$T/k/metrics.csv" | tr '\n' ' ')" = "label renamed renamed " ] || fail "--label on a resume: $(cat "$T/k/metrics.csv")"
done_tests

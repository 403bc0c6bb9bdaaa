#!/usr/bin/env bash
# FedAvg tools and pipeline: --help/usage/exit codes of aggregate, local-train, evaluate;
# bad updates (other arch, NaN, wrong round) refused by name; a tiny end-to-end run on
# generated data, killed mid-run (asserted: after round 1 is complete, before the last round)
# and resumed, ends with the same final model and metrics as an uninterrupted run; the
# rounds' schedule (which are evaluated, which clients each round trains).
# (Weighting: fedavg_weighting.sh; hostile options and strings: fedavg_hostile.sh.)
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
for t in aggregate local-train evaluate; do
    expect_rc 0 "$B/$t" --help && grep -q usage "$T/out" || fail "$t --help"
    expect_rc 0 "$B/$t" --version
    expect_rc 2 "$B/$t" --no-such-option && expect_one_error_line
done
expect_rc 2 "$B/local-train" -m x && expect_one_error_line
expect_rc 2 "$B/local-train" -m x -d y -o z --lr abc && expect_one_error_line
expect_rc 2 "$B/aggregate" --init resnet8 -o "$T/m.mpk.zst" && expect_one_error_line
expect_rc 4 "$B/evaluate" -m "$T/missing.mpk.zst" --test "$T/missing2" && expect_one_error_line
expect_rc 2 "$B/aggregate" --select 5 --clients 3 --round 1

# selection: seeded, K distinct of N, changes with the round
s1=$("$B/aggregate" --select 8 --clients 20 --round 1 --seed 7 | tr '\n' ' ')
s1b=$("$B/aggregate" --select 8 --clients 20 --round 1 --seed 7 | tr '\n' ' ')
s2=$("$B/aggregate" --select 8 --clients 20 --round 2 --seed 7 | tr '\n' ' ')
[ "$s1" = "$s1b" ] || fail "selection not deterministic"
[ "$s1" != "$s2" ] || fail "selection does not change with the round"
[ "$(echo $s1 | wc -w)" = 8 ] || fail "selection size: $s1"

# data: 3 classes would do, but partition's CIFAR reader wants 10 labels
"$FEDSM_ROOT/$BUILD/bin/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || "$B/gen-demo" "$T/data" 40 10
"$B/partition" --in "$T/data" -o "$T/p" --if 4 --clients 4 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/m0.mpk.zst" -q
for k in 0 1 2; do
    "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-0$k.mpk.zst" --epochs 1 --batch 16 -o "$T/u$k.mpk.zst" -q || fail "local-train $k"
done
"$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/m1.mpk.zst" -q "$T/u2.mpk.zst" "$T/u0.mpk.zst" "$T/u1.mpk.zst" || fail aggregate
# (aggregate's weighting against numpy, on clients of unequal sizes: fedavg_weighting.sh)

# bad updates are refused by name
"$B/aggregate" --init resnet8 --width 8 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/other.mpk.zst" -q
"$B/local-train" -m "$T/other.mpk.zst" -d "$T/p/client-03.mpk.zst" --epochs 1 -o "$T/u_other.mpk.zst" -q
expect_rc 3 "$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/bad.mpk.zst" "$T/u0.mpk.zst" "$T/u_other.mpk.zst" && expect_one_error_line
grep -q "client 3" "$T/err" || fail "other-arch update not named: $(cat "$T/err")"
"$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-03.mpk.zst" --epochs 1 --round 5 -o "$T/u_round.mpk.zst" -q
expect_rc 3 "$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/bad.mpk.zst" "$T/u0.mpk.zst" "$T/u_round.mpk.zst" && expect_one_error_line
grep -q "client 3 is for round 5" "$T/err" || fail "wrong-round update not named: $(cat "$T/err")"
# a NaN in one tensor of client 3's update (written by Python, as a broken client might)
$PY - "$T" <<'PY' || fail "could not write the NaN update"
import sys, msgpack, zstandard, numpy as np
T = sys.argv[1]
raw = open(f'{T}/u1.mpk.zst', 'rb').read()
r = msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(raw), raw=False)
w = np.frombuffer(r['tensors']['fc.weight']['data'], dtype='<f4').copy(); w[3] = np.nan
r['tensors']['fc.weight']['data'] = w.tobytes(); r['meta']['client'] = 3
open(f'{T}/u_nan.mpk.zst', 'wb').write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))
PY
expect_rc 3 "$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/bad.mpk.zst" "$T/u0.mpk.zst" "$T/u_nan.mpk.zst" && expect_one_error_line
grep -q "client 3: .*tensors.fc.weight\[0,3\]: nan" "$T/err" || fail "NaN update not named: $(cat "$T/err")"
[ ! -e "$T/bad.mpk.zst" ] || fail "a refused aggregate left an output file"
ls "$T"/*.tmp.* 2>/dev/null && fail "temp files left behind"

# evaluate: metrics CSV with a top1 fraction, many/medium/few from the partition
"$B/evaluate" -m "$T/m1.mpk.zst" --test "$T/p/test.mpk.zst" -p "$T/p/partition.mpk.zst" --csv "$T/m.csv" -o "$T/metrics.mpk.zst" -q || fail evaluate
head -1 "$T/m.csv" | grep -q '^label,round,top1,loss,many,medium,few,n$' || fail "csv header"
awk -F, 'NR==2 && !($3>=0 && $3<=1 && $8==100) {exit 1}' "$T/m.csv" || fail "csv row: $(cat "$T/m.csv")"
"$B/inspect" "$T/metrics.mpk.zst" | grep -q "confusion" || fail "metrics record"

# CLIP2FL/FedSM client step: distillation from clip-embed's teacher records (the tiny
# committed CLIP; a merges file with no merges keeps the token ids inside its vocabulary)
FIX=$FEDSM_ROOT/tests/fixtures/clip
if [ -x "$B/clip-embed" ] && [ -f "$FIX/tiny.safetensors" ]; then
    printf '#version: test\n' | gzip > "$T/merges.txt.gz"
    "$B/clip-embed" -w "$FIX/tiny.safetensors" --vocab "$T/merges.txt.gz" -s "$T/p/client-00.mpk.zst" \
        -s "$T/p/client-01.mpk.zst" -o "$T/teach.mpk.zst" -q || fail "clip-embed"
    "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-01.mpk.zst" --epochs 1 --batch 16 \
        --teacher "$T/teach.mpk.zst" --kd-alpha 1 --kd-temp 3 -o "$T/u_kd.mpk.zst" -q || fail "local-train with a teacher"
    "$B/inspect" "$T/u_kd.mpk.zst" | grep -q "kd_alpha=1" || fail "KD update meta"
    cmp -s "$T/u_kd.mpk.zst" "$T/u1.mpk.zst" && fail "the teacher changed nothing"
    expect_rc 3 "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-02.mpk.zst" --teacher "$T/teach.mpk.zst" -o "$T/u_x.mpk.zst" \
        && expect_one_error_line
    grep -q "no teacher record for client 2" "$T/err" || fail "missing teacher not named: $(cat "$T/err")"
fi

# end to end, killed and resumed == uninterrupted
P=(--data "$T/data" --if 4 --clients 4 --per-round 2 --rounds 3 --epochs 1 --batch 16 --width 4 --jobs 2 -q)
"$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run" >/dev/null || fail "fedavg.sh"
[ "$(wc -l < "$T/run/metrics.csv")" = 4 ] || fail "metrics.csv rows"
mv "$T/run" "$T/run-a"
# killed once round 1 is complete (its metrics.csv, renamed last, exists): the whole process
# group is stopped first, so what is on disk when it is checked is what the kill hits; the
# last round's model must not exist yet (else this would only compare two full runs)
setsid "$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run" >/dev/null 2>&1 &
pid=$!
for i in $(seq 1 1200); do [ -f "$T/run/round-001/metrics.csv" ] && break; sleep 0.05; done
kill -STOP -- -$pid 2>/dev/null
[ -f "$T/run/round-001/metrics.csv" ] || fail "round 1 never completed"
[ ! -f "$T/run/round-003/model.mpk.zst" ] || fail "the run reached its last round before the kill"
term_stopped_group $pid; rc=$?
[ $rc = 143 ] || fail "a TERMed pipeline exits 143, got $rc"
left=$(find "$T/run" -name '*.tmp*'); [ -z "$left" ] || fail "temporaries left by the TERMed run: $left"
r1=$(stat -c '%n %Y %i' "$T/run/round-001/"*)   # round 1 is complete: resuming leaves it alone
# what a SIGKILLed tool leaves behind is removed by the resumed run
mkdir -p "$T/run/round-002"; echo junk > "$T/run/round-002/update-99.mpk.zst.tmp.999999"
# a second pipeline on the same run directory is refused while the first holds it
setsid "$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run-b" >/dev/null 2>&1 &
pid=$!
for i in $(seq 1 100); do [ -f "$T/run-b/config.txt" ] && break; sleep 0.05; done
expect_rc 1 "$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run-b" && grep -q "another pipeline" "$T/err" || fail "concurrent run not refused"
kill -TERM -- -$pid 2>/dev/null; wait $pid 2>/dev/null
LOCK_WAIT=60 "$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run" >/dev/null || fail "resume"
cmp "$T/run/round-003/model.mpk.zst" "$T/run-a/round-003/model.mpk.zst" || fail "resumed run's final model differs"
[ "$(stat -c '%n %Y %i' "$T/run/round-001/"*)" = "$r1" ] || fail "the resumed run rewrote round 1's files"
[ ! -e "$T/run/round-002/update-99.mpk.zst.tmp.999999" ] || fail "a stale temporary survived the resume"
diff "$T/run/metrics.csv" "$T/run-a/metrics.csv" >&2 || fail "resumed run's metrics differ"
expect_rc 2 "$FEDSM_ROOT/pipelines/fedavg.sh" "${P[@]}" --run "$T/run" --lr 0.5

# the schedule: 12 rounds at --eval-every 5 evaluate rounds 5 and 10 and each of the last 10
# (3..12), and round r trains the clients `aggregate --select` picks for round r
Q=(--data "$T/data" --if 4 --clients 4 --per-round 2 --rounds 12 --epochs 0 --batch 16 --width 4 --jobs 2 -q)
"$FEDSM_ROOT/pipelines/fedavg.sh" "${Q[@]}" --eval-every 5 --keep-updates --run "$T/sched" >/dev/null || fail "fedavg.sh, 12 rounds"
[ "$(tail -n +2 "$T/sched/metrics.csv" | cut -d, -f2 | tr '\n' ' ')" = "3 4 5 6 7 8 9 10 11 12 " ] ||
    fail "evaluated rounds: $(tail -n +2 "$T/sched/metrics.csv" | cut -d, -f2 | tr '\n' ' ')"
for r in $(seq 1 12); do
    want=$("$B/aggregate" --select 2 --clients 4 --round "$r" --seed 7 | sort -n | tr '\n' ' ')
    got=$(cd "$(printf '%s/sched/round-%03d' "$T" "$r")" && ls update-*.mpk.zst | sed 's/update-0*\([0-9]\)/\1/; s/\.mpk\.zst//' | sort -n | tr '\n' ' ')
    [ "$got" = "$want" ] || fail "round $r trained clients $got, aggregate --select picks $want"
done
done_tests

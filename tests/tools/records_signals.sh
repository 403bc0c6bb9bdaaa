#!/usr/bin/env bash
# records_signals.sh - a writer killed by SIGTERM or SIGINT mid-stream (between records, and
# inside the encoding of a large record) leaves neither its temp file (*.tmp.*) nor the final
# file, and dies of the signal; a finished writer leaves exactly the final file; after SIGKILL
# the next run of the same output removes the dead writer's temp file (and no live one's).
source tests/tools/lib.sh
H=${BUILD:-build}/helpers
wait_tmp() { # dir: waits until a non-empty *.tmp.* exists there (10 s at most)
    for _ in $(seq 200); do
        for f in "$1"/*.tmp.*; do [ -s "$f" ] && return 0; done
        sleep 0.05
    done
    return 1
}
for sig in TERM INT; do
    for kind in between inside; do
        d="$T/$sig-$kind"
        mkdir -p "$d"
        if [ $kind = between ]; then
            env --default-signal=INT $H/rec-gen --records 200 --sleep-ms 50 "$d/out.mpk.zst" & pid=$!
        else
            env --default-signal=INT $H/rec-gen --records 20 --huge 100000000 --level 1 "$d/out.mpk.zst" & pid=$!
        fi
        wait_tmp "$d" || fail "$sig $kind: no temp file appeared"
        kill -$sig $pid
        wait $pid; rc=$?
        want=$((128 + $(kill -l $sig)))
        [ $rc = $want ] || fail "$sig $kind: exit $rc, expected $want"
        [ -z "$(ls -A "$d")" ] || fail "$sig $kind: left behind: $(ls "$d")"
    done
done
# SIGKILL runs no handler: the temp file stays; the next run of the same output removes it
# (its PID is dead, the file is ours) and leaves a live process's temp file alone
d="$T/KILL"
mkdir -p "$d"
$H/rec-gen --records 200 --sleep-ms 50 "$d/out.mpk.zst" & pid=$!
wait_tmp "$d" || fail "KILL: no temp file appeared"
kill -KILL $pid
wait $pid 2>/dev/null
[ -f "$d/out.mpk.zst.tmp.$pid" ] || fail "KILL: expected the stale temp file: $(ls "$d")"
sleep 30 & live=$!
echo x >"$d/out.mpk.zst.tmp.$live"
$H/rec-gen --records 2 "$d/out.mpk.zst" || fail "rerun after KILL"
[ "$(ls "$d" | tr '\n' ' ')" = "out.mpk.zst out.mpk.zst.tmp.$live " ] || fail "KILL rerun left: $(ls "$d")"
kill $live
$H/rec-gen --records 2 "$T/ok.mpk.zst" || fail "rec-gen"
[ "$(ls "$T" | grep -c 'ok.mpk.zst')" = 1 ] || fail "finished writer: $(ls "$T")"
done_tests

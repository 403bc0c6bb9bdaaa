#!/usr/bin/env bash
# federated.sh - federated mode on loopback (README "Federated across machines"; issue 13):
#  1. a server and 4 CURVE clients in separate folders (each holding only its shard) run 3
#     FedAvg rounds with pipelines/fl-server.sh / fl-client.sh and end with the very model
#     (and metrics) of pipelines/fedavg.sh with the same options; system.csv names the
#     clients aggregate --select picks; the clients exit when told;
#  2. the server pipeline SIGKILLed in round 2 and rerun resumes that round with the same
#     clients (which reconnect) and still ends byte-identical;
#  3. one round with a client killed mid-round (dropped, the round completes with the rest),
#     a client sending a corrupt update (refused by name), an unknown key (refused at the
#     handshake, logged) and a keyless client (cannot connect); the same with --min-clients 3
#     fails as documented (exit 1, no answered.txt);
#  4. a hostile insecure peer: a malformed header, a result for an old round, a message over
#     --max-msg, a duplicate: each refused or discarded with a log line (the oversized one by
#     closing its connection unread: the server does not grow), and the round completes;
#  5. a model record over 1 GiB + 1 MiB (a ResNet-8 of width 960, zeros; FL_BIG_RANDOM=1:
#     initialised, so its messages are that large too) goes to a client and comes back as
#     its update.
# Every server runs under `timeout`, every client has --idle-exit; waits are bounded.
# FL_TEST_ONLY="3 4" runs only those parts (1 and 2 need the 3-round reference run).
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN H=$FEDSM_ROOT/$BUILD/helpers PL=$FEDSM_ROOT/pipelines
export FEDSM_BIN=$B
for t in fl-server fl-client fl-keygen; do
    [ -x "$B/$t" ] || skip "no $B/$t (build first)"
done
PIDS=()
cleanup() { local p; for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for FILE [TENTHS]: waits (default 60 s) for FILE to exist
wait_for() { local i; for ((i = 0; i < ${2:-600}; i++)); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1; }

# keys (CURVE needs a libzmq built with libsodium, as Debian's is)
mkdir -p "$T/keys/enrolled"
"$B/fl-keygen" -o "$T/keys/server" -q
rc=$?
[ $rc = 5 ] && skip "this libzmq has no CURVE (fl-keygen: $("$B/fl-keygen" -o "$T/keys/x" 2>&1))"
[ $rc = 0 ] || fail "fl-keygen exit $rc"
for k in 0 1 2 3; do
    "$B/fl-keygen" -o "$T/keys/client-0$k" -q || fail "fl-keygen client $k"
    cp "$T/keys/client-0$k.pub" "$T/keys/enrolled/"
done
"$B/fl-keygen" -o "$T/keys/stranger" -q || fail "fl-keygen stranger"
[ "$(stat -c %a "$T/keys/server.key")" = 600 ] || fail "secret key mode $(stat -c %a "$T/keys/server.key")"
[ "$(stat -c %a "$T/keys/server.pub")" = 644 ] || fail "public key mode"
expect_rc 4 "$B/fl-keygen" -o "$T/keys/server" && grep -q "never overwritten" "$T/err" || fail "keygen overwrote a key"
[ "$("$B/fl-keygen" --public "$T/keys/server.key")" = "$(grep -v '^#' "$T/keys/server.pub")" ] || fail "keygen --public"
cp "$T/keys/server.key" "$T/keys/loose.key"; chmod 644 "$T/keys/loose.key"
expect_rc 4 "$B/fl-keygen" --public "$T/keys/loose.key" && grep -q "chmod 600" "$T/err" || fail "a secret key others may read was taken"
expect_rc 2 "$B/fl-server" --bind tcp://127.0.0.1:1 --clients 2 --stop && expect_one_error_line

T0=$SECONDS
ONLY=" ${FL_TEST_ONLY:-1 2 3 4 5} "
want() { [[ $ONLY == *" $1 "* ]]; }
# data, and the file pipeline's run as the reference
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
OPTS=(--if 4 --clients 4 --per-round 3 --rounds 3 --epochs 1 --batch 16 --width 4)
REF_ROUNDS=0; if want 1 || want 2; then REF_ROUNDS=3; fi
timeout 300 "$PL/fedavg.sh" --data "$T/data" "${OPTS[@]}" --rounds $REF_ROUNDS -q --run "$T/ref" >/dev/null || fail "fedavg.sh"
mkdir -p "$T/server-part"
cp "$T/ref/partition/partition.mpk.zst" "$T/ref/partition/test.mpk.zst" "$T/server-part/"
for k in 0 1 2 3; do mkdir -p "$T/host$k"; cp "$T/ref/partition/client-0$k.mpk.zst" "$T/host$k/"; done
M0=$T/ref/round-000/model.mpk.zst
# what would fail every client is refused before the socket opens: a NaN model (exit 3,
# the field named), a shard with a label outside its classes; a portless address is usage
$PY - "$M0" "$T/nan.mpk.zst" "$T/host0/client-00.mpk.zst" "$T/badlabel.mpk.zst" <<'PY' || fail "python"
import sys, msgpack, zstandard, numpy as np
def rw(src, dst, f):
    d = zstandard.ZstdDecompressor().decompressobj()
    r = msgpack.unpackb(d.decompress(open(src, 'rb').read()), raw=False)
    f(r)
    open(dst, 'wb').write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))
def nan(r):
    w = np.frombuffer(r['tensors']['fc.bias']['data'], '<f4').copy(); w[1] = np.nan
    r['tensors']['fc.bias']['data'] = w.tobytes()
def label(r):
    t = r['tensors']['labels']
    l = np.frombuffer(t['data'], t['type']).copy(); l[0] = 99
    t['data'] = l.tobytes()
rw(sys.argv[1], sys.argv[2], nan)
rw(sys.argv[3], sys.argv[4], label)
PY
expect_rc 3 "$B/fl-server" --bind tcp://127.0.0.1:1 --insecure -m "$T/nan.mpk.zst" --dir "$T/rn" --clients 4 \
    --per-round 2 && expect_one_error_line && grep -q "fc.bias" "$T/err" || fail "NaN model: $(cat "$T/err")"
[ ! -e "$T/rn" ] || fail "a refused model left a round folder"
expect_rc 3 "$B/fl-client" --server tcp://127.0.0.1:1 --insecure --shard "$T/badlabel.mpk.zst" --work "$T/wb" &&
    expect_one_error_line || fail "bad shard: $(cat "$T/err")"
[ ! -e "$T/wb" ] || fail "a refused shard left a work folder"
expect_rc 2 "$B/fl-client" --server tcp://127.0.0.1 --insecure --shard "$T/host0/client-00.mpk.zst" --work "$T/wb" &&
    expect_one_error_line

# start_client K ARG...: fl-client.sh of client K (CURVE) in the background, working in
# host K/work-SCEN; its pid (fl-client's: the script execs it) in CPID.  --idle-exit bounds it.
start_client() {
    local k=$1; shift
    "$PL/fl-client.sh" --server "tcp://127.0.0.1:$PORT" --key "$T/keys/client-0$k.key" \
        --server-key "$T/keys/server.pub" --shard "$T/host$k/client-0$k.mpk.zst" --heartbeat 0.2 \
        --work "$T/host$k/work-$SCEN" --idle-exit 120 "$@" 2>>"$T/host$k/log" &
    CPID=$!
    PIDS+=("$CPID")
}
SRV=(--data "$T/server-part" "${OPTS[@]}" --key "$T/keys/server.key" --enrolled "$T/keys/enrolled"
     --dropout 2 --wait 30 --grace 20 --deadline 120)

echo "$((SECONDS - T0)) s: 1. four clients"
if want 1; then
# ---- 1. four clients on loopback == the file pipeline ----
PORT=$(free_port) SCEN=1
cp=()
for k in 0 1 2 3; do start_client $k; cp+=("$CPID"); done
timeout 300 "$PL/fl-server.sh" "${SRV[@]}" --bind "tcp://127.0.0.1:$PORT" --run "$T/fl" >/dev/null 2>"$T/fl.log" ||
    { fail "fl-server.sh"; cat "$T/fl.log" >&2; }
cmp "$T/fl/round-003/model.mpk.zst" "$T/ref/round-003/model.mpk.zst" || fail "federated final model differs from fedavg.sh's"
diff <(cut -d, -f2- "$T/fl/metrics.csv") <(cut -d, -f2- "$T/ref/metrics.csv") >&2 || fail "federated metrics differ"
for r in 1 2 3; do
    want=$("$B/aggregate" --select 3 --clients 4 --round $r --seed 7 | tr '\n' ' ')
    got=$(awk -F, -v r=$r '$2 == r && $4 == "answered" { printf "%s ", $3 }' "$T/fl/system.csv")
    [ "$got" = "$want" ] || fail "round $r: answered '$got', aggregate --select picks '$want'"
done
[ "$(wc -l <"$T/fl/system.csv")" = 10 ] || fail "system.csv: $(cat "$T/fl/system.csv")"
head -1 "$T/fl/system.csv" | grep -q '^label,round,client,status,bytes_to_client,bytes_from_client,train_s,reply_s,num_samples$' ||
    fail "system.csv header"
awk -F, 'NR > 1 && !($5 > 1000 && $6 > 1000 && $7 > 0 && $8 >= $7 && $9 > 0) { exit 1 }' "$T/fl/system.csv" ||
    fail "system.csv values: $(cat "$T/fl/system.csv")"
for k in 0 1 2 3; do
    ls "$T/host$k" | grep -v -e "^client-0$k.mpk.zst\$" -e '^log$' -e '^work-' && fail "host $k holds more than its shard"
done
for p in "${cp[@]}"; do wait "$p" || fail "a client did not exit 0 when the run ended"; done
grep -q "the server ended the run" "$T/host0/log" || fail "client 0 was not told to stop"

fi
echo "$((SECONDS - T0)) s: 2. the server killed"
if want 2; then
# ---- 2. the server killed in round 2 and rerun resumes it; the clients reconnect ----
# (round 2's training waits 3 s, so that the kill falls inside the round)
PORT=$(free_port) SCEN=2
cat >"$T/lt-slow2.sh" <<EOF
#!/bin/sh
case "\$*" in *round-002/*) sleep 3 ;; esac
exec "$B/local-train" "\$@"
EOF
chmod +x "$T/lt-slow2.sh"
cp=()
for k in 0 1 2 3; do start_client $k --local-train "$T/lt-slow2.sh"; cp+=("$CPID"); done
setsid timeout 300 "$PL/fl-server.sh" "${SRV[@]}" --bind "tcp://127.0.0.1:$PORT" --run "$T/fl2" >/dev/null 2>"$T/fl2.log" &
spid=$!
wait_for "$T/fl2/round-002/selected.txt" || fail "round 2 never started"
kill -KILL -- -$spid 2>/dev/null; wait $spid 2>/dev/null
[ ! -e "$T/fl2/round-002/answered.txt" ] || fail "round 2 was over before the kill"
[ ! -e "$T/fl2/round-003" ] || fail "the run reached round 3 before the kill"
timeout 300 "$PL/fl-server.sh" "${SRV[@]}" --bind "tcp://127.0.0.1:$PORT" --run "$T/fl2" >/dev/null 2>"$T/fl2b.log" ||
    { fail "resumed fl-server.sh"; cat "$T/fl2b.log" >&2; }
grep -q "round 2: resuming with the clients picked before" "$T/fl2b.log" || fail "the rerun did not resume round 2: $(cat "$T/fl2b.log")"
cmp "$T/fl2/round-003/model.mpk.zst" "$T/ref/round-003/model.mpk.zst" || fail "resumed federated run differs from fedavg.sh's"
for p in "${cp[@]}"; do wait "$p" || fail "a client of the resumed run did not exit 0"; done

fi
echo "$((SECONDS - T0)) s: 3. dropout"
if want 3; then
# ---- 3. dropout, corrupt update, unknown and missing keys; then too few clients ----
PORT=$(free_port) SCEN=3
ADDR=tcp://127.0.0.1:$PORT
printf '#!/bin/sh\nFL_PEER_CORRUPT=1 exec "%s" fake-train "$@"\n' "$H/fl-peer" >"$T/corrupt.sh"
printf '#!/bin/sh\nFL_PEER_SLEEP=60 exec "%s" fake-train "$@"\n' "$H/fl-peer" >"$T/slow.sh"
chmod +x "$T/corrupt.sh" "$T/slow.sh"
cp=()
start_client 0; cp+=("$CPID")
start_client 1; cp+=("$CPID")
start_client 2 --local-train "$T/corrupt.sh"; cp+=("$CPID")
start_client 3 --local-train "$T/slow.sh"; victim=$CPID
timeout 60 "$B/fl-client" --server "$ADDR" --key "$T/keys/stranger.key" --server-key "$T/keys/server.pub" \
    --shard "$T/host1/client-01.mpk.zst" --work "$T/wx" 2>"$T/stranger.log" & px=$!
timeout 60 "$B/fl-client" --server "$ADDR" --insecure --shard "$T/host1/client-01.mpk.zst" --work "$T/wy" \
    2>"$T/nokey.log" & py=$!
PIDS+=("$px" "$py")
( wait_for "$T/host3/work-3/round-001/model.mpk.zst" && kill -9 "$victim" ) &
kpid=$!
RND=(--bind "$ADDR" --key "$T/keys/server.key" --enrolled "$T/keys/enrolled" -m "$M0" --clients 4
     --per-round 4 --epochs 1 --batch 16 --dropout 2 --wait 30 --deadline 60)
expect_rc 0 timeout 120 "$B/fl-server" "${RND[@]}" --dir "$T/r3" --min-clients 2
cp "$T/err" "$T/r3.log"
wait $kpid || fail "client 3 was never killed"
[ "$(tr '\n' ' ' <"$T/r3/answered.txt")" = "0 1 " ] || fail "answered: $(cat "$T/r3/answered.txt")"
for s in 0,answered 1,answered 2,refused 3,dropped; do
    grep -q "^fedavg,1,$s," "$T/r3/system.csv" || fail "system.csv lacks client ${s/,/ }: $(cat "$T/r3/system.csv")"
done
grep -q "refused the update of client 2: .*not a zstd frame" "$T/r3.log" || fail "corrupt update not refused by name: $(cat "$T/r3.log")"
grep -q "client 3 dropped out" "$T/r3.log" || fail "dropout not logged"
grep -q "refused a client at the handshake: its key .* is not enrolled" "$T/r3.log" || fail "unknown key not logged: $(cat "$T/r3.log")"
grep -q "$(grep -v '^#' "$T/keys/stranger.pub" | sed 's/[][\.*^$]/\\&/g')" "$T/r3.log" || fail "the refused key is not the stranger's"
wait $px; [ $? = 4 ] || fail "the unknown-key client did not exit 4"
grep -q "refused this client's key at the handshake" "$T/stranger.log" || fail "stranger: $(cat "$T/stranger.log")"
wait $py; [ $? = 4 ] || fail "the keyless client did not exit 4"
grep -q "cannot talk to the server" "$T/nokey.log" || fail "keyless client: $(cat "$T/nokey.log")"
grep -q "a peer failed the handshake" "$T/r3.log" || fail "the server did not log the keyless client"
[ ! -e "$T/r3/update-02.mpk.zst" ] && [ ! -e "$T/r3/update-03.mpk.zst" ] || fail "a refused or missing update was written"
"$B/local-train" -m "$M0" -d "$T/host0/client-00.mpk.zst" --epochs 1 --batch 16 -o "$T/u0.mpk.zst" -q
cmp "$T/u0.mpk.zst" "$T/r3/update-00.mpk.zst" || fail "client 0's update is not local-train's, byte for byte"
# too few: client 3 is gone, client 2 (restarted) sends a NaN: 2 answers for --min-clients 3
kill "${cp[2]}"; wait "${cp[2]}"
printf '#!/bin/sh\nFL_PEER_NAN=1 exec "%s" fake-train "$@"\n' "$H/fl-peer" >"$T/nan.sh"
chmod +x "$T/nan.sh"
SCEN=3b start_client 2 --local-train "$T/nan.sh"; cp[2]=$CPID
expect_rc 1 timeout 120 "$B/fl-server" "${RND[@]}" --dir "$T/r3b" --min-clients 3 --wait 3
grep -q "refused the update of client 2: .*conv1.weight.*nan" "$T/err" || fail "NaN update not refused by name: $(cat "$T/err")"
grep -q "error: round 1: 2 of 3 picked clients answered by the deadline, fewer than --min-clients 3" "$T/err" ||
    fail "min-clients failure: $(cat "$T/err")"
grep -q "round 1: 3 of 4 clients present, picked 3" "$T/err" || fail "picking from the present: $(cat "$T/err")"
[ ! -e "$T/r3b/answered.txt" ] && [ -f "$T/r3b/system.csv" ] || fail "a failed round's folder"
expect_rc 0 timeout 60 "$B/fl-server" --stop --bind "$ADDR" --key "$T/keys/server.key" \
    --enrolled "$T/keys/enrolled" --clients 4 --wait 3
for p in "${cp[@]}"; do wait "$p" || fail "a client did not exit 0 when told to stop"; done

fi
echo "$((SECONDS - T0)) s: 4. a hostile"
if want 4; then
# ---- 4. a hostile peer (insecure server) ----
PORT=$(free_port)
ADDR=tcp://127.0.0.1:$PORT
# (the honest client takes 5 s more, so that the rogue's result and its duplicate come first)
cat >"$T/lt-slow.sh" <<EOF
#!/bin/sh
sleep 5
exec "$B/local-train" "\$@"
EOF
chmod +x "$T/lt-slow.sh"
timeout 300 "$B/fl-client" --server "$ADDR" --insecure --shard "$T/host0/client-00.mpk.zst" --work "$T/w4" \
    --heartbeat 0.2 --idle-exit 120 --local-train "$T/lt-slow.sh" 2>"$T/w4.log" & c4=$!
timeout 300 "$H/fl-peer" rogue "$ADDR" 1 $((256 << 20)) 2>"$T/rogue.log" & pr=$!
PIDS+=("$c4" "$pr")
expect_rc 0 timeout 120 /usr/bin/time -f "maxrss %M" -o "$T/rss" "$B/fl-server" --bind "$ADDR" --insecure \
    -m "$M0" --dir "$T/r4" --clients 2 --per-round 2 --epochs 1 --batch 16 --dropout 20 --wait 30 \
    --max-msg $((1 << 20))
for l in "dropped a malformed message from a peer" "discarded a late result of client 1 for round 0" \
    "discarded a duplicate result of client 1 for round 1"; do
    grep -q "$l" "$T/err" || fail "no '$l' in: $(cat "$T/err")"
done
[ "$(tr '\n' ' ' <"$T/r4/answered.txt")" = "0 1 " ] || fail "hostile round: $(cat "$T/r4/system.csv")"
rss=$(awk '/maxrss/ { print $2 }' "$T/rss")
[ "${rss:-999999}" -lt 102400 ] || fail "the server grew to $rss KB with a 256 MiB message over its 1 MiB limit"
wait $pr || fail "rogue: $(cat "$T/rogue.log")"
grep -q "closed by the server" "$T/rogue.log" || fail "the oversized message was taken: $(cat "$T/rogue.log")"
expect_rc 0 timeout 60 "$B/fl-server" --stop --bind "$ADDR" --insecure --clients 2 --wait 3
wait $c4 || fail "client of the hostile round: $(cat "$T/w4.log")"

fi
echo "$((SECONDS - T0)) s: 5. a model record"
if want 5; then
# ---- 5. a model record over 1 GiB to a client and back ----
avail=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
if [ "$avail" -lt $((6 << 20)) ]; then
    skip_check "the 1 GiB model needs 6 GiB of free memory (have $((avail >> 10)) MiB)"
else
    N=$(( (1 << 30) + (1 << 20) ))
    # a ResNet-8 of width 960 (zeros: a small file; FL_BIG_RANDOM=1 initialised: 1.1 GB)
    bytes=$("$H/fl-peer" big-model 960 ${FL_BIG_RANDOM:+--random} "$T/big.mpk.zst") || fail "big model"
    [ "${bytes:-0}" -gt $N ] || fail "the big model holds only ${bytes:-0} bytes"
    # the client's trainer checks the model arrived whole, then echoes it back as its update
    cat >"$T/echo.sh" <<EOF
#!/bin/sh
m= p=
for a in "\$@"; do [ "\$p" = -m ] && m=\$a; p=\$a; done
cmp -s "\$m" "$T/big.mpk.zst" || { echo "echo.sh: error: the model arrived changed" >&2; exit 1; }
exec "$H/fl-peer" fake-train "\$@"
EOF
    chmod +x "$T/echo.sh"
    PORT=$(free_port)
    ADDR=tcp://127.0.0.1:$PORT
    timeout 600 "$B/fl-client" --server "$ADDR" --insecure --shard "$T/host0/client-00.mpk.zst" --work "$T/w5" \
        --heartbeat 0.5 --idle-exit 300 --local-train "$T/echo.sh" 2>"$T/w5.log" & c5=$!
    PIDS+=("$c5")
    expect_rc 0 timeout 600 "$B/fl-server" --bind "$ADDR" --insecure -m "$T/big.mpk.zst" --dir "$T/r5" \
        --clients 1 --per-round 1 --dropout 60 --wait 60 --deadline 600 || cat "$T/w5/round-001/local-train.log" >&2
    # fl-server took it: one update of the model's layout (w, |u1 [N]), client 0, round 1
    [ "$(cat "$T/r5/answered.txt" 2>/dev/null)" = 0 ] || fail "the 1 GiB round: $(cat "$T/r5/system.csv")"
    expect_rc 0 timeout 60 "$B/fl-server" --stop --bind "$ADDR" --insecure --clients 1 --wait 3
    wait $c5 || fail "client of the big round: $(cat "$T/w5.log")"
fi
fi
echo "$((SECONDS - T0)) s: done"
done_tests

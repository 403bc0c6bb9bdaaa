#!/usr/bin/env bash
# records_big.sh - a record over 1 GiB (one |u1 tensor of 1 GiB + 1 MiB of pseudo-random,
# incompressible bytes, so the compressed frame/message is over 1 GiB too) streams through a
# file and through ZeroMQ (tcp: consumer binds, consumer first; ipc: producer binds, producer
# first) with no size limit of ours in the way; content checked byte for byte.  zstd level 1.
# Under the ASan build (BUILD=build-asan) the tensor is 64 MiB: same paths, less time.
source tests/tools/lib.sh
H=${BUILD:-build}/helpers
N=$(( (1 << 30) + (1 << 20) ))
case ${BUILD:-build} in *asan*) N=$(( 64 << 20 ));; esac
avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
[ "$avail" -gt $((6 << 20)) ] || skip "needs 6 GiB of free memory (have $((avail >> 10)) MiB)"
tm() { /usr/bin/time -f "%C: %e s, %M KB max RSS" "$@"; }

# file
tm $H/rec-gen --huge $N --level 1 "$T/big.mpk.zst" || fail "write big file"
size=$(stat -c %s "$T/big.mpk.zst")
[ "$size" -gt "$N" ] || fail "compressed file is only $size bytes"
tm $H/rec-check --huge $N --records 1 "$T/big.mpk.zst" || fail "read big file"
rm -f "$T/big.mpk.zst"

# ZeroMQ tcp: the consumer binds and starts first
port=$((20000 + $$ % 20000))
tm $H/rec-check --huge $N --records 1 --timeout-ms 120000 "@tcp://127.0.0.1:$port" & bg=$!
sleep 0.2
tm $H/rec-gen --huge $N --level 1 --timeout-ms 120000 "tcp://127.0.0.1:$port" || fail "tcp producer"
wait $bg || fail "tcp consumer"

# ZeroMQ ipc: the producer binds and starts first
tm $H/rec-gen --huge $N --level 1 --timeout-ms 120000 "@ipc://$T/big" & bg=$!
sleep 0.5
tm $H/rec-check --huge $N --records 1 --timeout-ms 120000 ">ipc://$T/big" || fail "ipc consumer"
wait $bg || fail "ipc producer"
done_tests

#!/usr/bin/env bash
# local-train's random streams are keyed by (seed, round, client) (DESIGN 6): the same
# (seed, round, client) gives bit-identical weights; another round, another client or another
# seed gives other weights (batch order and augmentation differ), for the default per-batch
# augmentation and for --aug sample, and with --aug none the batch order alone still differs.
# The augmentation stream itself is keyed by the client: with one batch holding the whole
# shard, the batch order changes nothing but float summation order, so two clients' weights
# differ by noise under --aug none and by far more under --aug batch (another crop/flip).
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "python3-numpy/msgpack/zstandard missing"
"$B/gen-demo" "$T/data" 20 10 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 2 --clients 2 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 5 -o "$T/m0.mpk.zst" -q || fail "init"
D=$T/p/client-00.mpk.zst
train() { # NAME ARGS...: one epoch on client 0's shard
    local name=$1; shift
    "$B/local-train" -m "$T/m0.mpk.zst" -d "$D" --epochs 1 --batch 8 --threads 1 -q -o "$T/$name.mpk.zst" "$@" \
        || fail "local-train $name"
}
for aug in batch sample none; do
    train "$aug-r1c0" --aug "$aug" --round 1 --client 0
    train "$aug-r1c0b" --aug "$aug" --round 1 --client 0
    train "$aug-r2c0" --aug "$aug" --round 2 --client 0
    train "$aug-r1c1" --aug "$aug" --round 1 --client 1
    train "$aug-s8" --aug "$aug" --round 1 --client 0 --seed 8
done
for aug in batch none; do   # one batch: the whole shard
    train "full-$aug-c0" --aug "$aug" --round 1 --client 0 --batch 100000
    train "full-$aug-c1" --aug "$aug" --round 1 --client 1 --batch 100000
done
$PY - "$T" <<'PY' || fail "streams not keyed by (seed, round, client)"
import io, sys, msgpack, zstandard, numpy as np
T = sys.argv[1]
def weights(name):
    raw = zstandard.ZstdDecompressor().stream_reader(open(f"{T}/{name}.mpk.zst", "rb"), read_across_frames=True).read()
    rec = [r for r in msgpack.Unpacker(io.BytesIO(raw), raw=False) if r.get("kind") == "update"][0]
    return {k: np.frombuffer(t["data"], t["type"]) for k, t in rec["tensors"].items()}
bad = []
for aug in ("batch", "sample", "none"):
    a = weights(f"{aug}-r1c0")
    same = lambda b: all(np.array_equal(a[k], b[k]) for k in a)
    if not same(weights(f"{aug}-r1c0b")):
        bad.append(f"--aug {aug}: the same (seed, round, client) gave other weights")
    for other, what in (("r2c0", "round"), ("r1c1", "client"), ("s8", "seed")):
        if same(weights(f"{aug}-{other}")):
            bad.append(f"--aug {aug}: another {what} gave the same weights")
def maxdiff(x, y):
    a, b = weights(x), weights(y)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a if a[k].dtype.kind == "f")
noise, aug = maxdiff("full-none-c0", "full-none-c1"), maxdiff("full-batch-c0", "full-batch-c1")
if not (aug > 1e-3 and aug > 100 * noise):
    bad.append(f"one whole-shard batch: clients 0 and 1 differ by {aug:.3g} with --aug batch, {noise:.3g} "
               "with --aug none: the augmentation stream is not keyed by the client")
print(f"whole-shard batch, clients 0 vs 1: max |dw| {aug:.3g} (--aug batch), {noise:.3g} (--aug none)")
if bad:
    sys.exit("\n".join(bad))
PY
done_tests

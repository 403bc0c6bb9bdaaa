#!/usr/bin/env bash
# aggregate's FedAvg against a direct numpy computation on clients of UNEQUAL sizes (a plain
# Dirichlet split): every <f4 tensor (weights and BatchNorm running statistics) is the
# num_samples-weighted mean summed in client-id order, integer tensors (num_batches_tracked)
# the maximum, meta.clients the sorted ids.  The sizes are checked to differ enough that a
# plain mean would be caught (its distance is asserted to be far above the tolerance).
# Skips (77) without numpy/msgpack/zstandard: this check has no other reference.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "python3 numpy/msgpack/zstandard missing (the reference of this check)"
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 4 --clients 4 --split dirichlet --alpha 0.5 -q || fail "partition --split dirichlet"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/m0.mpk.zst" -q || fail "init"
for k in 0 1 2; do
    "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-0$k.mpk.zst" --epochs 1 --batch 16 --lr 0.2 \
        -o "$T/u$k.mpk.zst" -q || fail "local-train $k"
done
# given out of client order on purpose
"$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/m1.mpk.zst" -q "$T/u2.mpk.zst" "$T/u0.mpk.zst" "$T/u1.mpk.zst" || fail aggregate
$PY - "$T" <<'PY' || fail "aggregate is not the sample-weighted FedAvg (above)"
import sys, msgpack, zstandard, numpy as np
T = sys.argv[1]
def recs(p):
    data = open(p, 'rb').read(); out = []
    while data:
        o = zstandard.ZstdDecompressor().decompressobj(); r = o.decompress(data); data = o.unused_data
        out.append(msgpack.unpackb(r, raw=False))
    return [x for x in out if x['kind'] != 'end']
def arr(t): return np.frombuffer(t['data'], dtype=t['type']).reshape(t['shape'])
ups = [recs(f'{T}/u{k}.mpk.zst')[0] for k in range(3)]
m = recs(f'{T}/m1.mpk.zst')[0]
n = np.array([u['meta']['num_samples'] for u in ups], dtype=np.float64)
print('client sizes', n.tolist())
assert n.max() >= 1.3 * n.min(), f'client sizes too close to catch a plain mean: {n}'
assert m['meta']['clients'] == sorted(u['meta']['client'] for u in ups), m['meta']['clients']
worst = sep = 0.0; nint = 0
for name, t in m['tensors'].items():
    got = arr(t)
    xs = [arr(u['tensors'][name]) for u in ups]
    if t['type'] != '<f4':
        nint += 1
        assert np.array_equal(got, np.maximum.reduce(xs)), f'{name}: integer tensor is not the maximum'
        continue
    want = sum(n[k] / n.sum() * xs[k].astype(np.float64) for k in range(3))
    plain = sum(x.astype(np.float64) for x in xs) / 3
    worst = max(worst, float(np.abs(got - want).max()))
    sep = max(sep, float(np.abs(plain - want).max()))
print(f'max abs diff {worst:.3g} (tolerance 1e-6); a plain mean would differ by {sep:.3g}; {nint} integer tensors')
assert 'bn1.running_mean' in m['tensors'] and nint > 0
assert sep > 1e-4, 'weighted and plain means coincide: the check cannot tell them apart'
assert worst < 1e-6, worst
PY
done_tests

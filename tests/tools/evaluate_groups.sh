#!/usr/bin/env bash
# evaluate's many/medium/few columns at the exact boundaries of the rule (training counts
# > 100 many, 20..100 medium, < 20 few): classes of exactly 101/100 and 21/20/19 training
# images (set in the partition record's class_counts), rotated over the classes so that each
# count meets classes of different accuracy.  The CSV row, the JSON line and the metrics
# record must all equal the group means of per-class accuracies computed here (numpy) from
# evaluate's confusion matrix.  Ties: with the classifier zeroed every logit is exactly 0 and
# the prediction is the first class, as torch.argmax and numpy.argmax choose.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "python3-numpy/msgpack/zstandard missing"
"$B/gen-demo" "$T/data" 30 10 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 2 --clients 2 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 5 -o "$T/m0.mpk.zst" -q || fail "init"
# a little training, so that per-class accuracies differ
"$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-00.mpk.zst" --epochs 1 --batch 16 -o "$T/u.mpk.zst" -q || fail "local-train"
"$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/m.mpk.zst" -q "$T/u.mpk.zst" || fail "aggregate"

COUNTS="101 100 21 20 19 500 60 3 102 18"
for rot in 0 1 2 3 4 5 6 7 8 9; do
    $PY - "$T/p/partition.mpk.zst" "$T/part-$rot.mpk.zst" $rot $COUNTS <<'PY' || fail "writing partition $rot"
import io, sys, msgpack, zstandard, numpy as np
src, dst, rot, counts = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(c) for c in sys.argv[4:]]
raw = zstandard.ZstdDecompressor().stream_reader(open(src, "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
cc = np.roll(np.array(counts, "<i8"), rot)
for r in recs:
    if r.get("kind") == "partition":
        t = r["tensors"]["class_counts"]
        assert t["shape"] == [len(counts)], t["shape"]
        t["data"] = cc.tobytes()
with open(dst, "wb") as f:
    for r in recs:
        f.write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))
PY
    expect_rc 0 "$B/evaluate" -m "$T/m.mpk.zst" --test "$T/p/test.mpk.zst" -p "$T/part-$rot.mpk.zst" \
        --csv "$T/m-$rot.csv" --json "$T/m-$rot.json" -o "$T/m-$rot.mpk.zst" -q || continue
    $PY - "$T/m-$rot.csv" "$T/m-$rot.json" "$T/m-$rot.mpk.zst" $rot $COUNTS <<'PY' >>"$T/spread" || fail "rotation $rot: groups differ from the rule"
import io, json, sys, msgpack, zstandard, numpy as np
csvp, jsonp, recp, rot = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
counts = np.roll(np.array([int(c) for c in sys.argv[5:]]), rot)
raw = zstandard.ZstdDecompressor().stream_reader(open(recp, "rb"), read_across_frames=True).read()
rec = [r for r in msgpack.Unpacker(io.BytesIO(raw), raw=False) if r.get("kind") == "metrics"][0]
t = rec["tensors"]["confusion"]
conf = np.frombuffer(t["data"], t["type"]).reshape(t["shape"]).astype(np.float64)
acc = np.diag(conf) / conf.sum(1)   # the reference: per-class accuracy from the confusion matrix
want = {"many": acc[counts > 100].mean(), "medium": acc[(counts >= 20) & (counts <= 100)].mean(),
        "few": acc[counts < 20].mean()}
head, row = [l.strip().split(",") for l in open(csvp)][:2]
csv = dict(zip(head, row))
js = json.loads(open(jsonp).readline())
bad = []
for g, w in want.items():
    # the CSV and JSON print 4 decimals; the record holds the double
    for name, got, tol in (("csv", float(csv[g]), 5e-5), ("json", float(js[g]), 5e-5),
                           ("record", float(rec["meta"][g]), 1e-9)):
        if abs(got - w) > tol:
            bad.append(f"{g} {name}: {got} vs {w:.6f}")
if bad:
    sys.exit("rotation %d, counts %s, per-class %s: %s" % (rot, list(counts), np.round(acc, 3).tolist(), "; ".join(bad)))
print(int(np.ptp(acc) > 0))
PY
done
# exact ties: fc zeroed, every image predicted class 0 (the first maximum)
$PY - "$T/m.mpk.zst" "$T/m-tie.mpk.zst" <<'PY' || fail "writing the zeroed model"
import io, sys, msgpack, zstandard
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
n = 0
for r in recs:
    for k, t in r.get("tensors", {}).items():
        if k in ("fc.weight", "fc.bias"):
            t["data"] = bytes(len(t["data"])); n += 1
assert n == 2, n
with open(sys.argv[2], "wb") as f:
    for r in recs:
        f.write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))
PY
expect_rc 0 "$B/evaluate" -m "$T/m-tie.mpk.zst" --test "$T/p/test.mpk.zst" -o "$T/tie.mpk.zst" -q
$PY - "$T/tie.mpk.zst" <<'PY' || fail "tied logits: not every image predicted class 0 (the first maximum)"
import io, sys, msgpack, zstandard, numpy as np
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
t = [r for r in msgpack.Unpacker(io.BytesIO(raw), raw=False) if r.get("kind") == "metrics"][0]["tensors"]["confusion"]
conf = np.frombuffer(t["data"], t["type"]).reshape(t["shape"])
pred = conf.sum(0)
if conf.sum() == 0 or pred[0] != conf.sum():
    sys.exit(f"predictions per class {pred.tolist()}")
PY
# the check is only as good as the spread of the per-class accuracies it meets
grep -q 1 "$T/spread" 2>/dev/null || fail "every class has the same accuracy: the boundaries were not exercised"
done_tests

#!/usr/bin/env bash
# retrain: --help/usage/exit codes; bad features (wrong dim, NaN, labels out of range, wrong
# class count, missing file, wrong kind) give one error line, exit 3 (4 missing file), and
# no output file; on separable features the written head classifies all of them (numpy),
# every other tensor is the input model's, meta says what was done; --num-samples writes an
# update; --client keys the head (another client, another head); a retrained model loads
# in evaluate.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
expect_rc 0 "$B/retrain" --help && grep -q usage "$T/out" || fail "--help"
expect_rc 0 "$B/retrain" --version
expect_rc 2 "$B/retrain" --no-such-option && expect_one_error_line
expect_rc 2 "$B/retrain" --features x -m y && expect_one_error_line
expect_rc 2 "$B/retrain" --features x -m y -o z --lr abc && expect_one_error_line
expect_rc 2 "$B/retrain" --features x -m y -o z --epochs -1 && expect_one_error_line

# 4 classes, width 4 + proj 8: feat_dim 8
"$B/aggregate" --init resnet8 --classes 4 --width 4 --proj 8 --seed 3 -o "$T/m.mpk.zst" -q || fail "aggregate --init"
$PY - "$T" <<'PY'
import sys
try:
    import msgpack, zstandard, numpy as np
except ImportError:
    sys.exit(77)
T = sys.argv[1]
def tensor(a):
    return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
def write(name, x, y, meta=None, kind="features"):
    z = zstandard.ZstdCompressor(write_checksum=True)
    rec = {"fedsm": 1, "kind": kind, "meta": meta or {"round": 5, "method": "creff", "client": -1, "num_classes": 4, "feat_dim": x.shape[1]},
           "tensors": {"features": tensor(x), "labels": tensor(y)}}
    open(f"{T}/{name}", "wb").write(z.compress(msgpack.packb(rec, use_bin_type=True)))
g = np.random.default_rng(1)
ctr = g.normal(0, 3, (4, 8))
y = np.repeat(np.arange(4), 50).astype(np.int32)
x = (ctr[y] + g.normal(0, 0.3, (200, 8))).astype(np.float32)
write("f.mpk.zst", x, y)
write("dim.mpk.zst", x[:, :7].copy(), y)
xn = x.copy(); xn[17, 3] = np.nan; write("nan.mpk.zst", xn, y)
yb = y.copy(); yb[9] = 4; write("label.mpk.zst", x, yb)
write("classes.mpk.zst", x, y, {"num_classes": 5})
write("ns0.mpk.zst", x, y, {"num_classes": 4, "num_samples": 0})  # --as-update: a head of no samples
write("empty.mpk.zst", x[:0].copy(), y[:0].copy())
write("kind.mpk.zst", x, y, kind="model")
x10 = g.normal(0, 1, (100, 16)).astype(np.float32)  # for the 10-class model of the evaluate check
write("f10.mpk.zst", x10, (np.arange(100) % 10).astype(np.int32), {"round": 1})
PY
rc=$?
[ $rc = 77 ] && skip "Debian python3 with numpy, msgpack, zstandard needed"
[ $rc = 0 ] || fail "making features"
for bad in dim nan label classes empty kind; do
    expect_rc 3 "$B/retrain" --features "$T/$bad.mpk.zst" -m "$T/m.mpk.zst" -o "$T/out-$bad.mpk.zst" --epochs 1 && expect_one_error_line
    ls "$T"/out-$bad* >/dev/null 2>&1 && fail "$bad: output file left behind"
done
expect_rc 3 "$B/retrain" --features "$T/nan.mpk.zst" -m "$T/m.mpk.zst" -o "$T/o.mpk.zst" && grep -q "feature 17, dim 3" "$T/err" || fail "NaN not located"
expect_rc 3 "$B/retrain" --features "$T/label.mpk.zst" -m "$T/m.mpk.zst" -o "$T/o.mpk.zst" && grep -q "label 4 of feature 9" "$T/err" || fail "label not located"
expect_rc 4 "$B/retrain" --features "$T/missing.mpk.zst" -m "$T/m.mpk.zst" -o "$T/o.mpk.zst" && expect_one_error_line
expect_rc 3 "$B/retrain" --features "$T/f.mpk.zst" -m "$T/f.mpk.zst" -o "$T/o.mpk.zst" && expect_one_error_line
expect_rc 3 "$B/retrain" --features "$T/ns0.mpk.zst" -m "$T/m.mpk.zst" -o "$T/o.mpk.zst" --as-update --epochs 1 && expect_one_error_line
expect_rc 2 "$B/retrain" --features "$T/f.mpk.zst" -m "$T/m.mpk.zst" -o "$T/o.mpk.zst" --num-samples 0 && expect_one_error_line
[ -e "$T/o.mpk.zst" ] && fail "output file left behind"

"$B/retrain" --features "$T/f.mpk.zst" -m "$T/m.mpk.zst" -o "$T/r.mpk.zst" --epochs 40 -q || fail "retrain"
"$B/retrain" --features "$T/f.mpk.zst" -m "$T/m.mpk.zst" -o "$T/r2.mpk.zst" --epochs 40 -q || fail "retrain again"
cmp -s "$T/r.mpk.zst" "$T/r2.mpk.zst" || fail "retrain is not deterministic"
"$B/retrain" --features "$T/f.mpk.zst" -m "$T/m.mpk.zst" -o "$T/u.mpk.zst" --epochs 2 --batch 256 --num-samples 620 --client 3 -q || fail "retrain --num-samples"
# the client keys the head's init and shuffle streams (head.h): --client 1 and 2 train other heads
for k in 1 2; do
    "$B/retrain" --features "$T/f.mpk.zst" -m "$T/m.mpk.zst" -o "$T/c$k.mpk.zst" --epochs 1 --client $k -q || fail "retrain --client $k"
done
$PY - "$T" <<'PY' || fail "retrained model"
import sys, msgpack, zstandard, numpy as np
T = sys.argv[1]
def recs(p):
    d = zstandard.ZstdDecompressor().decompressobj()
    data = open(p, "rb").read()
    out = []
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        out.append(msgpack.unpackb(d.decompress(data), raw=False, strict_map_key=False))
        data = d.unused_data
    return [r for r in out if r["kind"] != "end"]
def arr(t):
    return np.frombuffer(t["data"], dtype=np.dtype(t["type"])).reshape(t["shape"])
m, r, f, u = recs(f"{T}/m.mpk.zst")[0], recs(f"{T}/r.mpk.zst")[0], recs(f"{T}/f.mpk.zst")[0], recs(f"{T}/u.mpk.zst")[0]
assert r["kind"] == "model" and u["kind"] == "update", (r["kind"], u["kind"])
assert list(r["tensors"]) == list(m["tensors"]), "tensor order changed"
for k in m["tensors"]:
    same = np.array_equal(arr(m["tensors"][k]), arr(r["tensors"][k]))
    assert same != k.startswith("fc."), k
x, y = arr(f["tensors"]["features"]), arr(f["tensors"]["labels"])
W, b = arr(r["tensors"]["fc.weight"]), arr(r["tensors"]["fc.bias"])
acc = ((x @ W.T + b).argmax(1) == y).mean()
assert acc == 1.0, acc
meta = r["meta"]
assert meta["retrained"] is True and meta["round"] == 5 and meta["retrain"]["epochs"] == 40, meta
assert meta["retrain"]["method"] == "creff", meta
# meta.inputs in the one form (lib/io/inputs.h): the features then the model; the options
import hashlib
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert sorted(meta["inputs"]) == ["options", "records"], meta["inputs"]
assert meta["inputs"]["records"] == [sha(f"{T}/f.mpk.zst"), sha(f"{T}/m.mpk.zst")], meta["inputs"]
assert len(meta["inputs"]["options"]) == 64 and meta["inputs"]["options"] != u["meta"]["inputs"]["options"]
assert u["meta"]["num_samples"] == 620 and u["meta"]["client"] == 3, u["meta"]
c1, c2 = (recs(f"{T}/c{k}.mpk.zst")[0]["tensors"] for k in (1, 2))
assert not np.array_equal(arr(c1["fc.weight"]), arr(c2["fc.weight"])), "--client 1 and 2 trained the same head"
print("ok: training accuracy", acc)
PY

# a retrained model loads in evaluate (a 10-class model on generated data)
"$B/gen-demo" "$T/data" 20 10 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 4 --clients 2 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/m10.mpk.zst" -q || fail "aggregate --init 10"
"$B/retrain" --features "$T/f10.mpk.zst" -m "$T/m10.mpk.zst" -o "$T/r10.mpk.zst" --epochs 3 -q || fail "retrain 10"
"$B/evaluate" -m "$T/r10.mpk.zst" --test "$T/p/test.mpk.zst" --csv "$T/metrics.csv" -q || fail "evaluate on the retrained model"
grep -q '^,1,' "$T/metrics.csv" || fail "metrics row: $(cat "$T/metrics.csv")"
done_tests

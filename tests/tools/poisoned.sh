#!/usr/bin/env bash
# Poisoned or empty inputs (issue 15) are refused by every tool that reads them: each case
# gives the expected exit code, exactly one stderr line that starts with "TOOL: error:" (a
# usage error, exit 2, may add its "hint:" line), and leaves nothing in the output folder.
# The cases: models with a NaN weight, an Inf or negative running_var, std 0, input size 0,
# no arch, a round of 2^63-1 or -3, fc rows other than num_classes, a width and depth the
# tensors do not have (local-train, evaluate, featgen, retrain, aggregate -m, heads); updates with a NaN, a negative client or round, a
# num_samples that overflows the sum; an empty or end-only update stream, '-' twice; an empty
# shard and test set; negative class counts; a names file with a gap, a list label of 100000;
# CLIP weights with a NaN weight or logit_scale, a missing --config, a non-gzip or cut
# vocabulary, class files not UTF-8 or holding NUL, a template without '{}', 3-D / trailing /
# miscounted / cut imports, --shard streams that are empty, of another kind or of no samples;
# a 65500x65500 JPEG header.  And --batch 1000000 trains and evaluates (a batch never holds
# more than the shard).
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
FIX=$FEDSM_ROOT/tests/fixtures/clip
$PY -c 'import msgpack, zstandard, numpy, PIL' 2>/dev/null || skip "Debian python3 with numpy, msgpack, zstandard, PIL needed"
O=$T/o
mkdir -p "$O"

# refused EXIT TOOL ARGS...: runs TOOL (a binary of $B) -q with ARGS, output files in $O
refused() {
    local want=$1 tool=$2; shift 2
    "$B/$tool" -q "$@" >"$T/out" 2>"$T/err"; local rc=$?
    local what="$tool $(echo "$*" | sed "s|$T/||g")"
    [ "$rc" = "$want" ] || { fail "$what: exit $rc, expected $want"; sed 's/^/    /' "$T/err" >&2; }
    local lines; lines=$(grep -vc '^hint: ' "$T/err")
    [ "$lines" = 1 ] || { fail "$what: $lines stderr lines, expected 1"; sed 's/^/    /' "$T/err" >&2; }
    head -n1 "$T/err" | grep -q "^$tool: error: " || fail "$what: not a '$tool: error:' line: $(head -n1 "$T/err")"
    [ -z "$(ls -A "$O")" ] || { fail "$what: left $(ls -A "$O")"; rm -f "$O"/*; }
}
# says WORDS: the last refusal's message holds WORDS (a fixed string)
says() { grep -qF -- "$1" "$T/err" || fail "message lacks '$1': $(cat "$T/err")"; }

"$B/gen-demo" "$T/data" 20 4 >/dev/null 2>&1 || fail "gen-demo"
"$B/partition" --in "$T/data" -o "$T/p" --if 2 --clients 2 -q || fail "partition"
"$B/aggregate" --init resnet8 --width 4 --partition "$T/p/partition.mpk.zst" --seed 1 -o "$T/m.mpk.zst" -q || fail "init"
for k in 0 1; do
    "$B/local-train" -m "$T/m.mpk.zst" -d "$T/p/client-0$k.mpk.zst" --epochs 1 -o "$T/u$k.mpk.zst" -q || fail "local-train $k"
done
cp "$FEDSM_ROOT/tests/tools/rec.py" "$T/" || fail "rec.py"
cp "$FIX/merges-tiny.txt.gz" "$T/merges.txt.gz" || fail "merges"
printf 'cat\ndog\nship\n' > "$T/classes.txt"
$PY - "$T" <<'PY' || fail "making the poisoned inputs"
import copy, io, json, struct, sys
import msgpack, numpy as np, zstandard
from PIL import Image
T = sys.argv[1]
sys.path.insert(0, T)
import rec
z = zstandard.ZstdCompressor()
def frame(r): return z.compress(msgpack.packb(r, use_bin_type=True))
def end(n): return frame({"fedsm": 1, "kind": "end", "meta": {"count": n}})
def tensor(a): return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
def write(name, r, count=1): open(f"{T}/{name}", "wb").write(frame(r) + end(count))
def variant(src, name, change):
    r = copy.deepcopy(rec.recs(f"{T}/{src}")[0]); change(r); write(name, r)
def set_t(name, idx, v):
    def f(r):
        a = rec.arr(r["tensors"][name]).copy(); a[idx] = v; r["tensors"][name] = tensor(a)
    return f
def set_m(**kv):
    def f(r):
        for k, v in kv.items():
            if v is None: del r["meta"][k]
            else: r["meta"][k] = v
    return f
# models
variant("m.mpk.zst", "nanw.mpk.zst", set_t("layer1.0.conv1.weight", (1, 2, 0, 1), np.nan))
variant("m.mpk.zst", "infvar.mpk.zst", set_t("bn1.running_var", 2, np.inf))
variant("m.mpk.zst", "negvar.mpk.zst", set_t("layer2.0.bn1.running_var", 3, -0.5))
variant("m.mpk.zst", "std0.mpk.zst", set_m(std=[0.2, 0.0, 0.2]))
variant("m.mpk.zst", "insize0.mpk.zst", set_m(input_size=0))
variant("m.mpk.zst", "noarch.mpk.zst", set_m(arch=None))
variant("m.mpk.zst", "roundmax.mpk.zst", set_m(round=2**63 - 1))
variant("m.mpk.zst", "roundneg.mpk.zst", set_m(round=-3))
variant("m.mpk.zst", "classes11.mpk.zst", set_m(num_classes=11))
variant("m.mpk.zst", "absurd.mpk.zst", set_m(width=4096, depth=9998))
# updates
variant("u1.mpk.zst", "u_nan.mpk.zst", set_t("fc.weight", (2, 5), np.nan))
variant("u1.mpk.zst", "u_negc.mpk.zst", set_m(client=-4))
variant("u1.mpk.zst", "u_negr.mpk.zst", set_m(round=-1))
variant("u1.mpk.zst", "u_big.mpk.zst", set_m(num_samples=2**63 - 10))
variant("u1.mpk.zst", "u_absurd.mpk.zst", set_m(width=4096, depth=9998))
open(f"{T}/empty.mpk.zst", "wb").close()
open(f"{T}/endonly.mpk.zst", "wb").write(end(0))
# shards, partition
def no_samples(r):
    for k in ("images", "labels", "index"):
        a = rec.arr(r["tensors"][k]); r["tensors"][k] = tensor(a[:0].copy())
variant("p/client-00.mpk.zst", "emptyshard.mpk.zst", no_samples)
variant("p/test.mpk.zst", "emptytest.mpk.zst", no_samples)
variant("p/partition.mpk.zst", "negcount.mpk.zst", set_t("class_counts", 4, -7))
variant("p/partition.mpk.zst", "pstd0.mpk.zst", set_m(std=[0.2, 0.0, 0.2]))
# features for retrain (a valid record: the model is what is poisoned)
write("f.mpk.zst", {"fedsm": 1, "kind": "features", "meta": {"num_classes": 10},
                    "tensors": {"features": tensor(np.ones((10, 16), "<f4")), "labels": tensor(np.arange(10, dtype="<i4"))}})
# an encoded test shard whose second image claims 65500 x 65500 pixels
b = io.BytesIO(); Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(b, "JPEG"); ok = b.getvalue()
j = bytearray(ok); i = j.index(b"\xff\xc0"); j[i + 5:i + 9] = (65500).to_bytes(2, "big") * 2
blob = ok + bytes(j)
write("huge.mpk.zst", {"fedsm": 1, "kind": "shard",
                       "meta": {"classes": rec.recs(f"{T}/m.mpk.zst")[0]["meta"]["classes"], "client": -1},
                       "tensors": {"jpeg": tensor(np.frombuffer(blob, np.uint8)), "offsets": tensor(np.array([0, len(ok), len(blob)], "<i8")),
                                   "labels": tensor(np.array([1, 2], "<i4")), "index": tensor(np.array([0, 1], "<i8"))}})
PY
$PY - "$T" "$FIX/tiny.safetensors" <<'PY' || fail "making the poisoned CLIP inputs"
import json, struct, sys
import msgpack, numpy as np, zstandard
T, src = sys.argv[1], sys.argv[2]
b = open(src, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; head = json.loads(b[8:8 + n]); data = b[8 + n:]
def poison(name, tname, idx, v):
    d = bytearray(data); s, e = head[tname]["data_offsets"]
    a = np.frombuffer(bytes(d[s:e]), "<f4").copy(); a.flat[idx] = v; d[s:e] = a.tobytes()
    open(f"{T}/{name}", "wb").write(b[:8 + n] + bytes(d))
poison("nanw.safetensors", "text_model.encoder.layers.0.mlp.fc1.weight", 7, np.nan)
poison("nanls.safetensors", "logit_scale", 0, np.nan)
z = zstandard.ZstdCompressor()
def frame(r): return z.compress(msgpack.packb(r, use_bin_type=True))
def end(n): return frame({"fedsm": 1, "kind": "end", "meta": {"count": n}})
def tensor(a): return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
emb = frame({"fedsm": 1, "kind": "embeddings", "meta": {}, "tensors": {"text": tensor(np.ones((3, 24), "<f4"))}})
open(f"{T}/imp_count.mpk.zst", "wb").write(emb + end(2))
open(f"{T}/imp_garbage.mpk.zst", "wb").write(emb + end(1) + b"garbage!")
open(f"{T}/imp_cut.mpk.zst", "wb").write(emb + emb[:len(emb) // 2])
open(f"{T}/imp_3d.mpk.zst", "wb").write(frame({"fedsm": 1, "kind": "embeddings", "meta": {}, "tensors": {"text": tensor(np.ones((3, 2, 24), "<f4"))}}) + end(1))
np.save(f"{T}/cube.npy", np.ones((3, 2, 24), "<f4"))
np.save(f"{T}/ok.npy", np.ones((3, 24), "<f4"))
open(f"{T}/trail.npy", "wb").write(open(f"{T}/ok.npy", "rb").read() + b"xx")
open(f"{T}/model-only.mpk.zst", "wb").write(frame({"fedsm": 1, "kind": "model", "meta": {}, "tensors": {}}) + end(1))
open(f"{T}/none.mpk.zst", "wb").close()
sh = {"classes": ["cat", "dog", "ship"], "client": 0}
open(f"{T}/noimg.mpk.zst", "wb").write(frame({"fedsm": 1, "kind": "shard", "meta": sh, "tensors": {
    "images": tensor(np.zeros((0, 3, 32, 32), "u1")), "labels": tensor(np.zeros(0, "<i4")), "index": tensor(np.zeros(0, "<i8"))}}) + end(1))
PY
printf 'a photo\n' > "$T/notmpl.txt"
printf 'cat\nd\377og\nship\n' > "$T/notutf8.txt"
printf 'cat\nd\000og\nship\n' > "$T/nul.txt"
printf '#version: test\n' > "$T/plain.txt"
head -c 40 "$T/merges.txt.gz" > "$T/cut.txt.gz"
printf 'ring\n\nstripe\n' > "$T/gap.txt"
M=$T/m.mpk.zst D=$T/p/client-00.mpk.zst TS=$T/p/test.mpk.zst PP=$T/p/partition.mpk.zst

# every reader of a model: exit 3 naming the field (each variant to one of the three readers
# in turn, to keep the test short; the lines after the loop cross them over)
i=0
for v in nanw infvar negvar std0 insize0 noarch roundmax roundneg classes11; do
    case $((i++ % 3)) in
    0) refused 3 local-train -m "$T/$v.mpk.zst" -d "$D" --epochs 1 -o "$O/u.mpk.zst" ;;
    1) refused 3 evaluate -m "$T/$v.mpk.zst" --test "$TS" -o "$O/e.mpk.zst" ;;
    2) refused 3 aggregate -m "$T/$v.mpk.zst" -o "$O/m.mpk.zst" "$T/u0.mpk.zst" ;;
    esac
done
refused 3 aggregate -m "$T/nanw.mpk.zst" -o "$O/m.mpk.zst" "$T/u0.mpk.zst"
refused 3 evaluate -m "$T/roundneg.mpk.zst" --test "$TS" -o "$O/e.mpk.zst"
refused 3 local-train -m "$T/nanw.mpk.zst" -d "$D" -o "$O/u.mpk.zst" && says "tensors.layer1.0.conv1.weight[1,2,0,1]: nan"
refused 3 evaluate -m "$T/negvar.mpk.zst" --test "$TS" -o "$O/e.mpk.zst" && says "tensors.layer2.0.bn1.running_var[3]: -0.5"
refused 3 featgen --method fedsm -m "$T/infvar.mpk.zst" -d "$D" -P "$T/none" --select uniform -o "$O/f.mpk.zst" && says "bn1.running_var[2]: inf"
refused 3 retrain --features "$T/f.mpk.zst" -m "$T/std0.mpk.zst" -o "$O/r.mpk.zst" && says "meta.std[1]"
refused 3 local-train -m "$T/roundmax.mpk.zst" -d "$D" -o "$O/u.mpk.zst" && says "meta.round: 9223372036854775807"
refused 3 evaluate -m "$M" --test "$TS" --head "$T/nanw.mpk.zst" -o "$O/e.mpk.zst"
# a meta claiming a far larger network than the tensors: refused, not allocated or half-read
refused 3 local-train -m "$T/absurd.mpk.zst" -d "$D" -o "$O/u.mpk.zst" && says "conv1.weight"
refused 3 evaluate -m "$M" --test "$TS" --head "$T/absurd.mpk.zst" -o "$O/e.mpk.zst" && says "meta.depth"
refused 3 local-train -m "$M" -d "$D" --epochs 0 --gradients "$O/g.mpk.zst" --grad-head "$T/absurd.mpk.zst" && says "meta.depth"
refused 3 aggregate --heads -m "$M" -o "$O/m.mpk.zst" "$T/u_absurd.mpk.zst" && says "meta.depth"
refused 3 aggregate --init resnet8 --width 4 --partition "$T/pstd0.mpk.zst" -o "$O/m.mpk.zst" && says "meta.std[1]"

# updates: every input contributes exactly its records, each checked by value
refused 3 aggregate -m "$M" -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/u_nan.mpk.zst" && says "client 1: " && says "fc.weight[2,5]: nan"
refused 3 aggregate -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/u_negc.mpk.zst" && says "meta.client: -4"
refused 3 aggregate -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/u_negr.mpk.zst"
refused 3 aggregate -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/u_big.mpk.zst" && says "overflow"
refused 3 aggregate -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/empty.mpk.zst" && says "empty.mpk.zst holds no update record"
refused 3 aggregate -o "$O/m.mpk.zst" "$T/u0.mpk.zst" "$T/endonly.mpk.zst" && says "endonly.mpk.zst holds no update record"
refused 2 aggregate -o "$O/m.mpk.zst" - - < "$T/u0.mpk.zst"
refused 3 aggregate --heads -m "$M" -o "$O/m.mpk.zst" "$T/u_nan.mpk.zst"

# empty shards and test sets, negative counts, names with a gap, a list label of 100000
refused 3 local-train -m "$M" -d "$T/emptyshard.mpk.zst" -o "$O/u.mpk.zst" && says "no samples"
refused 3 local-train -m "$M" -d "$T/emptyshard.mpk.zst" --epochs 0 --prototypes "$O/p.mpk.zst"
refused 3 evaluate -m "$M" --test "$T/emptytest.mpk.zst" --csv "$O/x.csv" --json "$O/x.json" -o "$O/e.mpk.zst"
refused 3 evaluate -m "$M" --test "$TS" -p "$T/negcount.mpk.zst" -o "$O/e.mpk.zst" && says "class_counts[4]"
refused 3 aggregate --init resnet8 --classes 2 --names "$T/gap.txt" -o "$O/m.mpk.zst" && says "line 2"
refused 3 evaluate -m "$M" --test "$T/huge.mpk.zst" -o "$O/e.mpk.zst" && says "65500x65500"
mkdir -p "$T/li" && : > "$T/li/list.txt"
for i in 0 1 2 3; do cp "$T/data/batches.meta.txt" "$T/li/$i.png"; echo "$i.png $((i % 2))" >> "$T/li/list.txt"; done
echo "3.png 100000" >> "$T/li/list.txt"
refused 3 partition --in "$T/li/list.txt" -o "$O/parts" --clients 2 && says "line 5"
refused 3 partition --in "$T/data" --classes "$T/gap.txt" -o "$O/parts" --clients 2 && says "line 2"

# clip-embed: weights, config, vocabulary, class and template files, imports, shards
W=(-w "$FIX/tiny.safetensors" --config "$FIX/config.json" --vocab "$T/merges.txt.gz" -c "$T/classes.txt")
refused 3 clip-embed -w "$T/nanw.safetensors" --config "$FIX/config.json" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$O/c.mpk.zst" && says "mlp.fc1.weight' holds nan at [0,7]"
refused 3 clip-embed -w "$T/nanls.safetensors" --config "$FIX/config.json" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$O/c.mpk.zst" && says "logit_scale"
refused 4 clip-embed -w "$FIX/tiny.safetensors" --config "$T/none.json" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$O/c.mpk.zst" && says "none.json"
refused 3 clip-embed -w "$FIX/tiny.safetensors" --config "$FIX/config.json" --vocab "$T/plain.txt" -c "$T/classes.txt" -o "$O/c.mpk.zst" && says "not gzip"
refused 3 clip-embed -w "$FIX/tiny.safetensors" --config "$FIX/config.json" --vocab "$T/cut.txt.gz" -c "$T/classes.txt" -o "$O/c.mpk.zst"
refused 3 clip-embed -w "$FIX/tiny.safetensors" --config "$FIX/config.json" --vocab "$T/merges.txt.gz" -c "$T/notutf8.txt" -o "$O/c.mpk.zst" && says "line 2"
refused 3 clip-embed -w "$FIX/tiny.safetensors" --config "$FIX/config.json" --vocab "$T/merges.txt.gz" -c "$T/nul.txt" -o "$O/c.mpk.zst" && says "line 2"
refused 3 clip-embed "${W[@]}" -p "$T/notmpl.txt" -o "$O/c.mpk.zst" && says "notmpl.txt line 1"
for imp in cube.npy trail.npy imp_3d.mpk.zst imp_count.mpk.zst imp_garbage.mpk.zst imp_cut.mpk.zst; do
    refused 3 clip-embed --import "$T/$imp" -c "$T/classes.txt" -o "$O/c.mpk.zst"
done
for s in none model-only noimg; do
    refused 3 clip-embed "${W[@]}" -s "$T/$s.mpk.zst" -o "$O/c.mpk.zst"
done

# a batch larger than the shard is the whole shard: it trains and evaluates
"$B/local-train" -m "$M" -d "$D" --epochs 1 --batch 1000000 -o "$O/u.mpk.zst" -q 2>"$T/err" && [ -s "$O/u.mpk.zst" ] \
    || fail "local-train --batch 1000000: $(cat "$T/err")"
"$B/evaluate" -m "$M" --test "$TS" --batch 1000000 -o "$O/e.mpk.zst" -q 2>"$T/err" && [ -s "$O/e.mpk.zst" ] \
    || fail "evaluate --batch 1000000: $(cat "$T/err")"
done_tests

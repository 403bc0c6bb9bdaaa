#!/usr/bin/env bash
# Encoded (JPEG/PNG) shards end to end: an image folder of odd-sized JPEG and PNG files
# (RGB, greyscale, RGBA) written with PIL -> partition (encoded shards) -> aggregate --init
# (ResNet-8 family, input 32) -> local-train (train transform, 2 threads, reproducible) ->
# evaluate (eval transform): exit 0 and sane metrics.  Corrupt encoded shards (offsets that
# do not rise, offsets past the bytes, a truncated JPEG inside) fail with one error line,
# exit 3 and no output file.  Then pipelines/fedavg.sh on list files of the same images
# (--test-list, --root; ResNet-50 at width 8, 224 px): one round writes its metrics row.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
$PY -c 'import PIL, numpy, msgpack, zstandard' 2>/dev/null || skip "needs python3 PIL, numpy, msgpack, zstandard"

$PY - "$T/data" <<'PY' || fail "could not write the image folder"
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rs = np.random.RandomState(3)
sizes = [(40, 31), (33, 57), (64, 48), (29, 29), (50, 37), (45, 60), (31, 40), (70, 35)]
for split, n in (("train", 8), ("test", 3)):
    for c, name in enumerate(["cat", "dog", "eel"]):
        os.makedirs(f"{root}/{split}/{name}")
        for i in range(n):
            w, h = sizes[(i + c) % len(sizes)]
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack([(x * (3 + c) + y) % 256, (y * 5 + 40 * c) % 256,
                             np.full_like(x, 60 * c + 20)], -1)
            a = np.clip(base + rs.randint(0, 30, base.shape), 0, 255).astype(np.uint8)
            im = Image.fromarray(a, "RGB")
            if i % 4 == 1:
                im.convert("L").save(f"{root}/{split}/{name}/{i}.png")
            elif i % 4 == 3:
                im.convert("RGBA").save(f"{root}/{split}/{name}/{i}.png")
            else:
                im.save(f"{root}/{split}/{name}/{i}.jpg", quality=85)
PY
"$B/partition" --in "$T/data" -o "$T/p" --store encoded --if 1 --split iid --clients 2 -q || fail partition
"$B/inspect" "$T/p/client-00.mpk.zst" > "$T/insp" 2>&1
grep -q "offsets" "$T/insp" && grep -q "jpeg" "$T/insp" || fail "partition did not write an encoded shard: $(head -c 600 "$T/insp")"
"$B/aggregate" --init resnet8 --width 4 --input-size 32 --partition "$T/p/partition.mpk.zst" --seed 3 -o "$T/m0.mpk.zst" -q || fail "aggregate --init"

LT=(-m "$T/m0.mpk.zst" -d "$T/p/client-00.mpk.zst" --epochs 2 --batch 4 --lr 0.05 -q)
"$B/local-train" "${LT[@]}" -t 2 -o "$T/u0.mpk.zst" || fail "local-train on an encoded shard"
"$B/local-train" "${LT[@]}" -t 2 -o "$T/u0b.mpk.zst" || fail "local-train again"
cmp -s "$T/u0.mpk.zst" "$T/u0b.mpk.zst" || fail "local-train on an encoded shard is not reproducible"
"$B/local-train" "${LT[@]}" --aug none -o "$T/u0n.mpk.zst" || fail "local-train --aug none"
cmp -s "$T/u0.mpk.zst" "$T/u0n.mpk.zst" && fail "--aug none changed nothing"
"$B/local-train" -m "$T/m0.mpk.zst" -d "$T/p/client-01.mpk.zst" --epochs 2 --batch 4 --lr 0.05 -q -o "$T/u1.mpk.zst" || fail "local-train client 1"
"$B/aggregate" -m "$T/m0.mpk.zst" -o "$T/m1.mpk.zst" -q "$T/u0.mpk.zst" "$T/u1.mpk.zst" || fail aggregate
"$B/evaluate" -m "$T/m1.mpk.zst" --test "$T/p/test.mpk.zst" -p "$T/p/partition.mpk.zst" -t 2 \
    --csv "$T/m.csv" -o "$T/metrics.mpk.zst" -q || fail "evaluate on an encoded test shard"
awk -F, 'NR==2 && !($3>=0 && $3<=1 && $4>0 && $4<20 && $8==9) {exit 1}' "$T/m.csv" || fail "metrics row: $(cat "$T/m.csv")"
"$B/evaluate" -m "$T/m1.mpk.zst" --test "$T/p/test.mpk.zst" --csv "$T/m1.csv" -q || fail "evaluate, 1 thread"
[ "$(cut -d, -f3,4 "$T/m.csv")" = "$(cut -d, -f3,4 "$T/m1.csv")" ] || fail "evaluate differs on 1 and 2 threads"

# corrupt shards, rewritten in Python: 0 offsets not rising, 1 offsets past the bytes,
# 2 image 2 cut to half its bytes (offsets consistent: only decoding can tell)
$PY - "$T" <<'PY' || fail "could not write the corrupt shards"
import sys, msgpack, zstandard, numpy as np
T = sys.argv[1]
raw = open(f"{T}/p/test.mpk.zst", "rb").read()
rec = msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(raw), raw=False)
def save(r, k):
    open(f"{T}/bad{k}.mpk.zst", "wb").write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))
off = np.frombuffer(rec["tensors"]["offsets"]["data"], "<i8").copy()
jpeg = rec["tensors"]["jpeg"]["data"]
for k in (0, 1):
    o = off.copy()
    if k == 0: o[2] = o[3] + 1
    else: o[-1] += 10
    r = dict(rec, tensors=dict(rec["tensors"]))
    r["tensors"]["offsets"] = dict(rec["tensors"]["offsets"], data=o.tobytes())
    save(r, k)
assert jpeg[off[0]:off[0] + 2] == b"\xff\xd8", "sample 0 is not a JPEG"
cut = (off[1] - off[0]) // 2
nj = jpeg[:off[0] + cut] + jpeg[off[1]:]
o = off.copy(); o[1:] -= off[1] - off[0] - cut
r = dict(rec, tensors=dict(rec["tensors"]))
r["tensors"]["jpeg"] = dict(rec["tensors"]["jpeg"], data=nj, shape=[len(nj)])
r["tensors"]["offsets"] = dict(rec["tensors"]["offsets"], data=o.tobytes())
save(r, 2)
PY
for k in 0 1 2; do
    expect_rc 3 "$B/evaluate" -m "$T/m1.mpk.zst" --test "$T/bad$k.mpk.zst" -o "$T/badm$k.mpk.zst" && expect_one_error_line
    [ -e "$T/badm$k.mpk.zst" ] && fail "evaluate left an output file for bad shard $k"
    expect_rc 3 "$B/local-train" -m "$T/m0.mpk.zst" -d "$T/bad$k.mpk.zst" --epochs 1 -o "$T/badu$k.mpk.zst" && expect_one_error_line
    [ -e "$T/badu$k.mpk.zst" ] && fail "local-train left an output file for bad shard $k"
    case $k in
    0|1) grep -q "tensors.offsets" "$T/err" || fail "bad offsets not named: $(cat "$T/err")" ;;
    2) grep -q "tensors.jpeg\[.*sample 0" "$T/err" || fail "truncated JPEG not named: $(cat "$T/err")" ;;
    esac
done
# the ImageNet-LT form of the pipeline: list files with --root, ResNet-50 (width 8) at 224
for split in train test; do
    (cd "$T/data" && for f in "$split"/*/*; do
        case $f in */cat/*) c=0 ;; */dog/*) c=1 ;; *) c=2 ;; esac; echo "$f $c"; done) > "$T/$split.txt"
done
"$FEDSM_ROOT/pipelines/fedavg.sh" --data "$T/train.txt" --test-list "$T/test.txt" --root "$T/data" --if 1 \
    --clients 2 --per-round 2 --rounds 1 --epochs 1 --batch 8 --arch resnet50 --width 8 --threads 2 \
    --run "$T/inet" -q > "$T/inet.log" 2>&1 || { cat "$T/inet.log" >&2; fail "fedavg.sh on list files"; }
grep -q '^fedavg,1,' "$T/inet/metrics.csv" || fail "fedavg.sh on list files wrote no metrics row"
ls "$T"/*.tmp.* 2>/dev/null && fail "temp files left behind"
done_tests

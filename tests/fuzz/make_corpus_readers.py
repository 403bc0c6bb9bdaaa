#!/usr/bin/python3
"""make_corpus_readers.py - writes the seed corpus of fuzz_readers (tests/fuzz/corpus-readers/):
a valid ResNet-8 `model` of width 1 and 4 classes (the tensors of aggregate --init resnet8
--classes 4 --width 1, written here by name and shape) and an `update` of it; `shard`
streams (decoded 3x4x4 images, and encoded: a PNG and a JPEG back to back with offsets);
a `teacher` for sample indices 0..2 of 4 classes; an `embeddings` record with relevance
[4,4] and text [4,8]; and near-valid ones of each (NaN, a negative running_var, a label or
index out of range, offsets out of order, shapes that disagree, a width the tensors do not
have).  Deterministic; Debian's python3 (python3-msgpack, python3-zstandard):
  /usr/bin/python3 tests/fuzz/make_corpus_readers.py"""
import os
import struct

import msgpack
import zstandard

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-readers")
C = 4
# a 1x1 PNG (RGB) and the smallest baseline JPEG most decoders take (8x8 grey)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
                    "0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082")
JPEG = bytes.fromhex(
    "ffd8ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c2024"
    "2e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080008000801011100ffc4"
    "001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403"
    "050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282"
    "090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a"
    "737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2"
    "c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100"
    "003f00fbd3ffd9")


def tensor(dtype, shape, data):
    return {"nd": True, "type": dtype, "kind": "", "shape": list(shape), "data": data}


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def f4(shape, fill=None, first=None):
    n = numel(shape)
    vals = [fill if fill is not None else (i % 7) * 0.125 - 0.25 for i in range(n)]
    if first is not None and n:
        vals[0] = first
    return tensor("<f4", shape, struct.pack("<%df" % n, *vals))


def ints(fmt, dtype, vals, shape=None):
    return tensor(dtype, shape if shape is not None else [len(vals)],
                  struct.pack("<%d%s" % (len(vals), fmt), *vals))


def frame(kind, meta, tensors):
    b = msgpack.packb({"fedsm": 1, "kind": kind, "meta": meta, "tensors": tensors}, use_bin_type=True)
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(b)


def end(n):
    return frame("end", {"count": n}, {})


def resnet8(width=1, classes=C):
    """name -> shape, in aggregate --init's order (BatchNorm: weight, bias, running stats)."""
    t = []

    def bn(p, c):
        t.extend([(p + ".weight", [c]), (p + ".bias", [c]), (p + ".running_mean", [c]),
                  (p + ".running_var", [c]), (p + ".num_batches_tracked", [])])
    w = width
    t.append(("conv1.weight", [w, 3, 3, 3]))
    bn("bn1", w)
    cin = w
    for i, cout in ((1, w), (2, 2 * w), (3, 4 * w)):
        p = "layer%d.0." % i
        t.append((p + "conv1.weight", [cout, cin, 3, 3]))
        bn(p + "bn1", cout)
        t.append((p + "conv2.weight", [cout, cout, 3, 3]))
        bn(p + "bn2", cout)
        if cout != cin:
            t.append((p + "downsample.0.weight", [cout, cin, 1, 1]))
            bn(p + "downsample.1", cout)
        cin = cout
    t += [("fc.weight", [classes, 4 * w]), ("fc.bias", [classes])]
    return t


def model(kind="model", meta=None, edit=None):
    ts = {}
    for name, shape in resnet8():
        if name.endswith("num_batches_tracked"):
            ts[name] = ints("q", "<i8", [3], shape=[])
        elif name.endswith("running_var") or name.endswith("bn1.weight") or name.endswith("bn2.weight"):
            ts[name] = f4(shape, 1.0)
        else:
            ts[name] = f4(shape)
    m = {"arch": "resnet8", "depth": 8, "width": 1, "num_classes": C, "proj_dim": 0, "feat_dim": 4,
         "input_size": 32, "in_channels": 3, "mean": [0.4914, 0.4822, 0.4465],
         "std": [0.2023, 0.1994, 0.201], "classes": ["a", "b", "c", "d"], "round": 1}
    if kind == "update":
        m.update({"client": 2, "num_samples": 7})
    m.update(meta or {})
    if edit:
        edit(ts)
    return frame(kind, m, ts)


def shard(n=3, labels=None, index=None, meta=None, encoded=False, offsets=None, images=None):
    labels = list(labels if labels is not None else [i % C for i in range(n)])
    index = list(index if index is not None else range(n))
    m = {"dataset": "fuzz", "classes": ["a", "b", "c", "d"], "client": 1,
         "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    m.update(meta or {})
    if encoded:
        blob = (PNG + JPEG) * ((n + 1) // 2)
        offs = offsets if offsets is not None else \
            [sum(len(PNG) if k % 2 == 0 else len(JPEG) for k in range(i)) for i in range(n + 1)]
        t = {"jpeg": tensor("|u1", [len(blob)], blob), "offsets": ints("q", "<i8", offs)}
    else:
        t = {"images": images or tensor("|u1", [n, 3, 4, 4], bytes((i * 7) % 256 for i in range(n * 48)))}
    t["labels"] = ints("i", "<i4", labels)
    t["index"] = ints("q", "<i8", index)
    return frame("shard", m, t) + end(1)


def teacher(rows=3, index=None, logits=None):
    index = list(index if index is not None else range(rows))
    return frame("teacher", {"client": 1, "classes": ["a", "b", "c", "d"]},
                 {"embeddings": f4([rows, 8]), "logits": logits or f4([rows, C]),
                  "index": ints("q", "<i8", index)})


def embeddings(rel=None, text=None):
    return frame("embeddings", {"classes": ["a", "b", "c", "d"], "logit_scale": 100.0},
                 {"text": text or f4([C, 8]), "relevance_text": f4([C, 8]), "relevance": rel or f4([C, C])})


def main():
    os.makedirs(OUT, exist_ok=True)
    s = {}
    s["model"] = model()
    s["update"] = model("update")
    s["model_nan"] = model(edit=lambda t: t.update({"conv1.weight": f4([1, 3, 3, 3], first=float("nan"))}))
    s["model_negvar"] = model(edit=lambda t: t.update({"bn1.running_var": f4([1], -1.0)}))
    s["model_wide"] = model(meta={"width": 2})
    s["model_no_fc"] = model(edit=lambda t: t.pop("fc.weight"))
    s["model_fc_shape"] = model(edit=lambda t: t.update({"fc.weight": f4([C + 1, 4])}))
    s["model_zero_std"] = model(meta={"std": [0.0, 0.2, 0.2]})
    s["update_neg_samples"] = model("update", meta={"num_samples": -1})
    s["shard"] = shard()
    s["shard_encoded"] = shard(n=2, encoded=True)
    s["shard_label"] = shard(labels=[0, 4, 1])
    s["shard_labels_short"] = shard(labels=[0, 1])
    s["shard_empty"] = shard(n=0)
    s["shard_offsets"] = shard(n=2, encoded=True, offsets=[0, 200, 100])
    s["shard_images_shape"] = shard(images=tensor("|u1", [3, 3, 4], bytes(36)))
    s["teacher"] = teacher()
    s["teacher_nan"] = teacher(logits=f4([3, C], first=float("inf")))
    s["teacher_dup"] = teacher(index=[0, 1, 1])
    s["teacher_missing"] = teacher(rows=2)
    s["teacher_classes"] = teacher(logits=f4([3, C + 1]))
    s["embeddings"] = embeddings()
    s["embeddings_nan"] = embeddings(rel=f4([C, C], first=float("nan")))
    s["embeddings_shape"] = embeddings(rel=f4([C, C - 1]), text=f4([C - 1, 8]))
    for name, data in s.items():
        with open(os.path.join(OUT, name + ".mpk.zst"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

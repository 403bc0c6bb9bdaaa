#!/usr/bin/python3
"""make_corpus_methods.py - writes the seed corpus of fuzz_methods (tests/fuzz/corpus-methods/):
valid `gradients`, `prototypes` and `features` records of the sizes the target also asks for (C 4, D 8)
and near-valid ones (NaN, classes not ascending, a class out of range, negative counts,
shapes that disagree, meta num_classes/feat_dim that disagree, zero-element tensors with
huge dimensions).  Deterministic; Debian's python3 (python3-msgpack, python3-zstandard):
  /usr/bin/python3 tests/fuzz/make_corpus_methods.py"""
import os
import struct

import msgpack
import zstandard

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-methods")
C, D = 4, 8


def tensor(dtype, shape, data):
    return {"nd": True, "type": dtype, "kind": "", "shape": list(shape), "data": data}


def f4(shape, fill=None):
    n = 1
    for s in shape:
        n *= s
    vals = [fill if fill is not None else (i % 7) * 0.25 - 0.5 for i in range(n)]
    return tensor("<f4", shape, struct.pack("<%df" % n, *vals))


def ints(fmt, dtype, vals):
    return tensor(dtype, [len(vals)], struct.pack("<%d%s" % (len(vals), fmt), *vals))


def frame(kind, meta, tensors):
    b = msgpack.packb({"fedsm": 1, "kind": kind, "meta": meta, "tensors": tensors}, use_bin_type=True)
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(b)


def gradients(classes=(0, 2, 3), counts=None, C_=C, D_=D, meta=None, weight=None, bias=None):
    K = len(classes)
    t = {"classes": ints("i", "<i4", list(classes)),
         "weight": weight or f4([K, C_, D_]),
         "bias": bias or f4([K, C_]),
         "counts": ints("i", "<i4", list(counts if counts is not None else [5] * K))}
    m = {"round": 2, "client": 1, "num_classes": C_, "feat_dim": D_, "repeats": 2, "batch": 4}
    m.update(meta or {})
    return frame("gradients", m, t)


def prototypes(means=None, counts=(3, 0, 7, 1), meta=None):
    t = {"means": means or f4([C, D]), "counts": ints("q", "<i8", list(counts))}
    m = {"round": 2, "client": 1, "num_classes": C, "feat_dim": D, "bn": "eval"}
    m.update(meta or {})
    return frame("prototypes", m, t)


def features(x=None, labels=(0, 1, 2, 3, 3), meta=None):
    t = {"features": x or f4([len(labels), D]), "labels": ints("i", "<i4", list(labels))}
    m = {"round": 2, "client": -1, "method": "creff", "num_classes": C, "feat_dim": D}
    m.update(meta or {})
    return frame("features", m, t)


def main():
    os.makedirs(OUT, exist_ok=True)
    s = {}
    s["grad"] = gradients()
    s["grad_all"] = gradients(classes=(0, 1, 2, 3))
    s["grad_none"] = gradients(classes=())
    s["grad_nan"] = gradients(weight=f4([3, C, D], float("nan")))
    s["grad_inf_bias"] = gradients(bias=f4([3, C], float("inf")))
    s["grad_unsorted"] = gradients(classes=(2, 0, 3))
    s["grad_dup"] = gradients(classes=(1, 1, 3))
    s["grad_range"] = gradients(classes=(0, 2, 4))
    s["grad_negcount"] = gradients(counts=(5, -1, 5))
    s["grad_meta"] = gradients(meta={"num_classes": 5})
    s["grad_other_shape"] = gradients(C_=3, D_=6, classes=(0, 1))
    s["grad_bias_shape"] = gradients(bias=f4([3, C + 1]))
    s["grad_huge_d"] = gradients(classes=(), D_=1 << 40, weight=tensor("<f4", [0, C, 1 << 40], b""))
    s["feat"] = features()
    s["feat_nan"] = features(x=f4([5, D], float("nan")))
    s["feat_label_range"] = features(labels=(0, 1, 4, 2, 3))
    s["feat_labels_short"] = features(x=f4([6, D]))
    s["feat_other_c"] = features(meta={"num_classes": C + 1})
    s["proto"] = prototypes()
    s["proto_nan"] = prototypes(means=f4([C, D], float("nan")))
    s["proto_neg"] = prototypes(counts=(3, -2, 7, 1))
    s["proto_counts_short"] = prototypes(counts=(3, 0, 7))
    s["proto_other_d"] = prototypes(means=f4([C, D - 1]))
    s["proto_huge_c"] = prototypes(means=tensor("<f4", [(1 << 32) + 2, 0], b""), counts=(1, 2))
    s["proto_huge_c2"] = prototypes(means=tensor("<f4", [(1 << 31) + 5, 0], b""), counts=(1, 2))
    s["proto_as_grad"] = frame("gradients", {}, {"means": f4([C, D]), "counts": ints("q", "<i8", [1] * C)})
    for name, data in s.items():
        with open(os.path.join(OUT, name + ".mpk.zst"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

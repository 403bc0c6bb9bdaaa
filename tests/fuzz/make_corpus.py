#!/usr/bin/python3
"""make_corpus.py - writes the fuzz seed corpus (tests/fuzz/corpus/): small valid fedsm
records of every dtype and meta type, and near-valid ones (wrong version, bad dtype, shape
mismatch, truncated, no content size, bytes keys).  Deterministic; run with Debian's python3
(python3-msgpack, python3-zstandard):  /usr/bin/python3 tests/fuzz/make_corpus.py"""
import os
import struct

import msgpack
import zstandard

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def tensor(dtype, shape, data, bkeys=False):
    k = (lambda s: s.encode()) if bkeys else (lambda s: s)
    return {k("nd"): True, k("type"): dtype, k("kind"): b"" if bkeys else "", k("shape"): list(shape),
            k("data"): data}


def record(kind="model", meta=None, tensors=None, version=1):
    return {"fedsm": version, "kind": kind, "meta": meta or {}, "tensors": tensors or {}}


def frame(obj, content_size=True, raw=None):
    b = raw if raw is not None else msgpack.packb(obj, use_bin_type=True)
    c = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=content_size)
    if content_size:
        return c.compress(b)
    o = c.compressobj()
    return o.compress(b) + o.flush()


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {}
    f4 = struct.pack("<4f", 1.0, -2.5, float("nan"), float("inf"))
    seeds["f4"] = frame(record(tensors={"w": tensor("<f4", [2, 2], f4)}))
    seeds["all_dtypes"] = frame(record(tensors={
        "a": tensor("<f4", [1], struct.pack("<f", 3.0)),
        "b": tensor("<f2", [2], b"\x00\x3c\x00\xc0"),
        "c": tensor("<i4", [2], struct.pack("<2i", -7, 9)),
        "d": tensor("<i8", [1], struct.pack("<q", -(1 << 40))),
        "e": tensor("|u1", [3], b"\x00\x7f\xff")}))
    seeds["scalar_empty"] = frame(record(tensors={
        "s": tensor("<i8", [], struct.pack("<q", 42)), "z": tensor("<f4", [0, 3], b"")}))
    seeds["meta"] = frame(record(kind="metrics", meta={
        "round": 3, "neg": -5, "big": (1 << 63) - 1, "f": 0.25, "inf": float("inf"),
        "s": "héllo", "b": True, "n": None, "l": [1, "x", [2.5, {"k": []}]],
        "m": {"a": {"b": {"c": 1}}}}))
    seeds["end"] = frame(record(kind="end", meta={"count": 1}))
    seeds["stream"] = seeds["f4"] + seeds["end"]
    seeds["no_content_size"] = frame(record(tensors={"u": tensor("|u1", [4], b"abcd")}),
                                     content_size=False)
    seeds["bytes_keys"] = frame(record(tensors={"u": tensor("<u1", [2], b"\x01\x02", True)}))
    seeds["version2"] = frame(record(version=2))
    seeds["bad_dtype"] = frame(record(tensors={"x": tensor("<f8", [1], b"\0" * 8)}))
    seeds["shape_mismatch"] = frame(record(tensors={"x": tensor("<f4", [3], b"\0" * 8)}))
    seeds["huge_dims"] = frame(record(tensors={"x": tensor("|u1", [1 << 62, 4], b"")}))
    seeds["deep"] = frame(None, raw=b"\x83\xa5fedsm\x01\xa4kind\xa1x\xa4meta" + b"\x81\xa1k" * 40 + b"\xc0")
    seeds["huge_map"] = frame(None, raw=b"\x83\xa5fedsm\x01\xa4kind\xa1x\xa4meta\xdf\xff\xff\xff\xff")
    seeds["huge_bin"] = frame(None, raw=b"\x82\xa5fedsm\x01\xa4kind\xc6\xff\xff\xff\xf0")
    seeds["ext"] = frame(None, raw=b"\x83\xa5fedsm\x01\xa4kind\xa1x\xa4meta\x81\xa1e\xd4\x01\x02")
    seeds["truncated"] = seeds["all_dtypes"][: len(seeds["all_dtypes"]) // 2]
    seeds["trailing"] = frame(None, raw=msgpack.packb(record(), use_bin_type=True) + b"\xc0")
    seeds["not_zstd"] = b"\x89PNG\r\n\x1a\n not a record"
    # zstd skippable frames (passed over by readers) around a record, and one cut short
    skip = lambda v, data: struct.pack("<II", 0x184D2A50 + v, len(data)) + data
    seeds["skippable"] = skip(0, b"meta") + seeds["f4"] + skip(15, b"") + seeds["end"] + skip(3, b"x" * 9)
    seeds["skippable_cut"] = seeds["f4"] + skip(7, b"padding")[:-3]
    # keys of exactly the reader's key buffers (record key, kind: 32; tensor key: 16) and one over
    for n in (31, 32, 33):
        seeds["key%d" % n] = frame(None, raw=b"\x84\xa5fedsm\x01\xa4kind\xa1x\xa4meta\x80"
                                   + msgpack.packb("k" * n) + b"\xc0")
        seeds["kind%d" % n] = frame(record(kind="k" * n))
    for n in (15, 16, 17):
        seeds["tkey%d" % n] = frame(record(tensors={"w": {"k" * n: None, "nd": True}}))
    for name, data in seeds.items():
        with open(os.path.join(OUT, name + ".mpk.zst"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""gen.py - the Python side of the record tests (Debian's python3-numpy/-msgpack/-zstandard).

  gen.py check FILE [--records N]     decode what C wrote (stock msgpack + zstandard, no fedsm
                                      code) into NumPy arrays and check every value against the
                                      formulas of tests/unit/testgen.h
  gen.py write FILE [--records N] [--stream] [--bytes-keys] [--no-end]
                                      write records with those formulas for C to read
                                      (--stream: zstd streaming compressor, frames without a
                                      content size; --bytes-keys: msgpack-numpy's b"nd" keys)
  gen.py corrupt DIR                  write the corrupt-input matrix, one file per case
  gen.py npy FILE.npy CLIENT SEQ NAME check an exported .npy against the formulas
"""
import io
import math
import os
import struct
import sys

import msgpack
import numpy as np
import zstandard

UTF8 = "\u00fcn\u00ef\u20ac\U0001F600"


def expected(client, seq):
    k = 1000 * client + seq
    i15, i7, i24, i4, i100 = (np.arange(n, dtype=np.int64) for n in (15, 7, 24, 4, 100))
    return {
        "f4": ((i15 % 1000) * 0.25 - 100 + k).astype("<f4").reshape(3, 5),
        "f2": (((i7 + k) % 2048) - 1024).astype("<f2"),
        "i4": ((i24 * 7 + k) % 100000 - 50000).astype("<i4").reshape(2, 3, 4),
        "i8": ((i4 + k) * (1 << 40) - (1 << 50)).astype("<i8"),
        "u1": ((i100 * 13 + k) % 256).astype("|u1").reshape(10, 10),
        "s": np.array(k + 0.5, dtype="<f4"),
        "e": np.zeros((0, 3), dtype="<i4"),
    }


def expected_meta(client, seq):
    k = 1000 * client + seq
    return {"client": client, "seq": seq, "name": "rec-%d" % k, "pi": 3.141592653589793,
            "neg": -k - 1, "big": (1 << 63) - 1, "small": -(1 << 63), "list": [1, "two", 3.5],
            "nested": {"a": {"b": [True, None]}}, "nan": float("nan"), "inf": float("-inf"),
            "utf8": UTF8}


def to_array(t):
    """msgpack-numpy map -> ndarray, keys as str or bytes."""
    t = {(k.decode() if isinstance(k, bytes) else k): v for k, v in t.items()}
    assert t["nd"] is True, t
    typ = t["type"].decode() if isinstance(t["type"], bytes) else t["type"]
    assert t["kind"] in ("", b""), t["kind"]
    return np.frombuffer(t["data"], dtype=np.dtype(typ)).reshape(t["shape"])


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[x], b[x]) for x in a)
    return type(a) is type(b) and a == b


def read_records(data):
    """Every map in a stream of concatenated zstd frames, decoded with stock tools."""
    d = zstandard.ZstdDecompressor()
    raw = d.stream_reader(io.BytesIO(data), read_across_frames=True).read()
    return list(msgpack.Unpacker(io.BytesIO(raw), raw=False, strict_map_key=False))


def check(path, records):
    with open(path, "rb") as f:
        data = f.read()
    recs = read_records(data)
    assert recs[-1]["kind"] == "end" and recs[-1]["meta"]["count"] == len(recs) - 1, recs[-1]
    recs = recs[:-1]
    if records is not None:
        assert len(recs) == records, (len(recs), records)
    for r in recs:
        assert r["fedsm"] == 1 and r["kind"] == "update", r.keys()
        m = r["meta"]
        want = expected_meta(m["client"], m["seq"])
        assert same(m, want), (m, want)
        exp = expected(m["client"], m["seq"])
        assert list(r["tensors"]) == list(exp), list(r["tensors"])  # stable order
        for name, want in exp.items():
            got = to_array(r["tensors"][name])
            assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
            assert np.array_equal(got, want), (name, got, want)
    print("python read %d records ok" % len(recs))


def tensor(a, bytes_keys=False):
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    return {k("nd"): True, k("type"): a.dtype.str, k("kind"): b"" if bytes_keys else "",
            k("shape"): list(a.shape), k("data"): a.tobytes()}


def frame(obj, stream=False, raw=None):
    b = raw if raw is not None else msgpack.packb(obj, use_bin_type=True)
    if stream:  # what zstandard's streaming API writes: no content size in the header
        o = zstandard.ZstdCompressor(level=3).compressobj()
        return o.compress(b) + o.flush()
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(b)


def write(path, records, stream, bytes_keys, end):
    out = b""
    for q in range(records):
        meta = expected_meta(0, q)
        rec = {"fedsm": 1, "kind": "update", "meta": meta,
               "tensors": {n: tensor(a, bytes_keys) for n, a in expected(0, q).items()}}
        out += frame(rec, stream)
    if end:
        out += frame({"fedsm": 1, "kind": "end", "meta": {"count": records}, "tensors": {}}, stream)
    with open(path, "wb") as f:
        f.write(out)


def rec_bytes(tensors=None, meta=None, version=1, kind="model"):
    return msgpack.packb({"fedsm": version, "kind": kind, "meta": meta or {},
                          "tensors": tensors or {}}, use_bin_type=True)


def corrupt(d):
    os.makedirs(d, exist_ok=True)
    good = rec_bytes({"w": tensor(np.arange(64, dtype="<f4").reshape(8, 8))}, {"round": 1})
    gf = frame(None, raw=good)
    end = frame(None, raw=rec_bytes(kind="end", meta={"count": 1}))
    hdr = b"\x84\xa5fedsm\x01\xa4kind\xa5model\xa4meta"
    cases = {}
    # truncated frames at several offsets (0 = the empty file)
    for cut in (1, 3, 4, 6, 12, len(gf) // 2, len(gf) - 5, len(gf) - 1):
        cases["truncated_%d" % cut] = gf[:cut]
    cases["empty"] = b""
    cases["truncated_second_frame"] = gf + end[: len(end) // 2]
    for pos in (0, 5, len(gf) // 2, len(gf) - 2):
        b = bytearray(gf)
        b[pos] ^= 0x55
        cases["flipped_%d" % pos] = bytes(b)
    cases["wrong_magic"] = b"\x28\xb5\x2f\xfe" + gf[4:]
    cases["not_zstd"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
    cases["text"] = b"hello, this is not a record stream\n"
    cases["not_fedsm"] = frame(None, raw=msgpack.packb({"hello": "world"}))
    cases["not_a_map"] = frame(None, raw=msgpack.packb([1, 2, 3]))
    cases["version_2"] = frame(None, raw=rec_bytes(version=2))
    cases["version_0"] = frame(None, raw=rec_bytes(version=0))
    cases["version_str"] = frame(None, raw=rec_bytes(version="1"))
    cases["unknown_dtype"] = frame(None, raw=rec_bytes({"w": dict(tensor(np.zeros(2, "<f8")))}))
    cases["object_dtype"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "|O", "kind": "", "shape": [1], "data": b"\0" * 8}}))
    cases["structured_kind"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "<f4", "kind": "V", "shape": [1], "data": b"\0" * 4}}))
    cases["shape_mismatch"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "<f4", "kind": "", "shape": [3, 3], "data": b"\0" * 32}}))
    cases["negative_dim"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "<f4", "kind": "", "shape": [-1], "data": b""}}))
    cases["absurd_dims"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "|u1", "kind": "", "shape": [1 << 62], "data": b""}}))
    cases["absurd_dims_overflow"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "<f4", "kind": "", "shape": [1 << 62, 1 << 62], "data": b""}}))
    cases["too_many_dims"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "|u1", "kind": "", "shape": [1] * 9, "data": b"\0"}}))
    cases["missing_data"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "|u1", "kind": "", "shape": [1]}}))
    cases["nd_false"] = frame(None, raw=rec_bytes(
        {"w": {"nd": False, "type": "|u1", "kind": "", "shape": [1], "data": b"\0"}}))
    cases["tensor_not_map"] = frame(None, raw=rec_bytes({"w": [1, 2]}))
    cases["deep_nesting"] = frame(None, raw=hdr + b"\x91" * 100000 + b"\xc0" + b"\xa7tensors\x80")
    cases["deep_nesting_maps"] = frame(None, raw=hdr + b"\x81\xa1k" * 1000 + b"\xc0" + b"\xa7tensors\x80")
    cases["huge_map_count"] = frame(None, raw=hdr + b"\xdf\xff\xff\xff\xff")
    cases["huge_array_count"] = frame(None, raw=hdr + b"\x81\xa1a\xdd\xff\xff\xff\xff")
    cases["huge_bin_len"] = frame(None, raw=hdr + b"\x81\xa1a\xc6\xff\xff\xff\xf0" + b"x" * 10)
    cases["huge_str_len"] = frame(None, raw=hdr + b"\x81\xa1a\xdb\xff\xff\xff\xf0" + b"x" * 10)
    cases["huge_tensor_count"] = frame(None, raw=hdr + b"\x80\xa7tensors\xdf\xff\xff\xff\xff")
    cases["huge_data_len"] = frame(None, raw=hdr + b"\x80\xa7tensors\x81\xa1w\x85\xa2nd\xc3"
                                   b"\xa4type\xa3|u1\xa4kind\xa0\xa5shape\x91\x01\xa4data"
                                   b"\xc6\xff\xff\xff\xf0")
    cases["huge_no_content_size"] = frame(None, stream=True, raw=hdr + b"\x81\xa1a\xc6\xff\xff\xff\xf0" + b"x")
    cases["ext_type"] = frame(None, raw=hdr + b"\x81\xa1e\xd6\x01abcd" + b"\xa7tensors\x80")
    cases["ext_in_tensor"] = frame(None, raw=hdr + b"\x80\xa7tensors\x81\xa1w\xd4\x01\x00")
    cases["bad_msgpack_byte"] = frame(None, raw=hdr + b"\xc1")
    cases["uint64_meta"] = frame(None, raw=hdr + b"\x81\xa1u\xcf\xff\xff\xff\xff\xff\xff\xff\xff" + b"\xa7tensors\x80")
    cases["nul_in_meta_key"] = frame(None, raw=hdr + b"\x81\xa3a\x00b\x01" + b"\xa7tensors\x80")
    cases["nul_in_tensor_name"] = frame(None, raw=rec_bytes({"a\0b": tensor(np.zeros(1, "|u1"))}))
    cases["newline_in_key"] = frame(None, raw=rec_bytes(
        {"w": {"nd": True, "type": "|u1", "kind": "", "shape": [1], "data": b"\0", "x\ny": 1}}))
    cases["bad_kind"] = frame(None, raw=rec_bytes(kind="Model!\n"))
    cases["dup_tensor"] = frame(None, raw=hdr + b"\x80\xa7tensors\x82" +
                                2 * (b"\xa1w" + msgpack.packb(tensor(np.zeros(1, "|u1")))))
    cases["trailing_in_frame"] = frame(None, raw=good + b"\xc0")
    cases["good_then_garbage"] = gf + b"garbage after the frame"
    cases["end_count_mismatch"] = gf + frame(None, raw=rec_bytes(kind="end", meta={"count": 5}))
    cases["end_without_count"] = gf + frame(None, raw=rec_bytes(kind="end"))
    cases["end_count_over"] = gf + gf + end  # more records than the end record declares
    skip = struct.pack("<II", 0x184D2A50, 7) + b"padding"  # a zstd skippable frame
    cases["skippable_cut_data"] = gf + end + skip[:-2]
    cases["skippable_cut_header"] = gf + end + skip[:6]
    for name, data in cases.items():
        with open(os.path.join(d, name + ".mpk.zst"), "wb") as f:
            f.write(data)


def check_npy(path, client, seq, name):
    got = np.load(path)
    want = expected(client, seq)[name]
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape)
    assert np.array_equal(got, want)


def main(a):
    def opt(name, default=None):
        return int(a[a.index(name) + 1]) if name in a else default
    if a[0] == "check":
        check(a[1], opt("--records"))
    elif a[0] == "write":
        write(a[1], opt("--records", 3), "--stream" in a, "--bytes-keys" in a, "--no-end" not in a)
    elif a[0] == "corrupt":
        corrupt(a[1])
    elif a[0] == "npy":
        check_npy(a[1], int(a[2]), int(a[3]), a[4])
    elif a[0] == "stdin-records":  # zstd -dc FILE | gen.py stdin-records: count of maps
        print(len(list(msgpack.Unpacker(sys.stdin.buffer, raw=False))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

"""tests/tools/rec.py - record helpers for the method tests (tests/tools/creff.sh, fedsm.sh):
read every record of a stream, a tensor as a numpy array, write one record (no end record).
Copied next to each test's scratch files and imported from there."""
import msgpack, zstandard, numpy as np
def recs(p):
    data, out = open(p, "rb").read(), []
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        out.append(msgpack.unpackb(d.decompress(data), raw=False, strict_map_key=False))
        data = d.unused_data
    return [r for r in out if r["kind"] != "end"]
def arr(t):
    return np.frombuffer(t["data"], dtype=np.dtype(t["type"])).reshape(t["shape"])
def tensors(p):
    return {k: arr(v) for k, v in recs(p)[0]["tensors"].items()}
def write(p, r):
    open(p, "wb").write(zstandard.ZstdCompressor().compress(msgpack.packb(r, use_bin_type=True)))

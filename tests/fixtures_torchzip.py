#!/usr/bin/python3
"""fixtures_torchzip.py - torch.save checkpoints for tests/unit/test_torchzip.c and
test_clip.c (lib/io/torchzip.c, the pytorch_model.bin reader).

Writes tests/fixtures/torchzip/:
  basic.pt         a state dict (OrderedDict with _metadata, as module.state_dict() gives)
                   of F32/F16/BF16/F64/I64/I32/I16/I8/U8/BOOL tensors of several shapes,
                   a 0-dim scalar, three views of one storage at offsets, an empty tensor,
                   an nn.Parameter, an expanded [1, 5] tensor and a non-tensor entry; saved
                   to a file object, so its folder is "archive/"
  proto4.pt        the same with pickle_protocol=4 (FRAME, MEMOIZE, STACK_GLOBAL, ...)
  zip64.pt         basic.pt with every central directory entry in zip64 form
  v3.pt            a _rebuild_tensor_v3 tensor on an UntypedStorage (newer torch's form)
  noncontig.pt     a transposed tensor (error)
  compressed.pt    basic.pt re-zipped with deflate (error)
  bad-*.pt         hand-made pickles: unknown opcode, unknown global, a tensor past its
                   storage, absurd shapes, a storage larger than its entry, a missing
                   storage, size and stride of different lengths, a name twice, a list
                   instead of a dict, a dict without tensors (errors)
and tests/fixtures/clip/tiny.bin: the weights of tiny.safetensors (read back from that
file, so the floats are the same bits) saved with torch.save(model.state_dict()) as
transformers does, plus the position_ids buffers older Hugging Face files carry.

Values are fixed here and written out again in test_torchzip.c.  Run with Debian's python
(torch 1.13):  /usr/bin/python3 tests/make_fixtures.py   (or: make fixtures)"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "torchzip")
CLIP = os.path.join(HERE, "fixtures", "clip")


def basic_state_dict():
    sd = collections.OrderedDict()
    sd["f32"] = torch.tensor([[0.5, -1.25, 3.0], [1e-3, -0.0, 65504.0]], dtype=torch.float32)
    sd["f16"] = torch.tensor([1.0, -2.0, 0.5, 65504.0, 2.0 ** -24], dtype=torch.float16)
    sd["bf16"] = (torch.arange(8, dtype=torch.float32) * 0.5 - 1).to(torch.bfloat16).reshape(2, 2, 2)
    sd["f64"] = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    sd["i64"] = torch.tensor([-3, 1 << 40], dtype=torch.int64)
    sd["i32"] = torch.tensor([-1, 0, 7], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False], dtype=torch.bool)
    sd["scalar"] = torch.tensor(4.605170249938965)  # like CLIP's logit_scale: shape []
    base = torch.arange(12, dtype=torch.float32)
    sd["shared.a"] = base[2:5]                 # offset 2, [3]
    sd["shared.b"] = base[6:12].view(2, 3)     # offset 6, [2, 3]
    sd["shared.c"] = base[4:8]                 # overlaps both
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.tensor([2.5, -0.75]))
    sd["expanded"] = torch.arange(5).expand((1, -1))  # a size-1 dimension, any stride
    sd["epoch"] = 7                                    # not a tensor: skipped
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 2})])
    return sd


def save_bytes(obj, **kw):
    b = io.BytesIO()
    torch.save(obj, b, **kw)
    return b.getvalue()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def zip64ify(data):
    """basic.pt with each central directory entry's sizes and offset moved to a zip64 extra
    field (as for a checkpoint over 4 GB), behind zip64 end records."""
    eocd = data.rfind(b"PK\x05\x06")
    loc = eocd - 20
    assert data[loc:loc + 4] == b"PK\x06\x07", "torch wrote no zip64 locator"
    z64 = struct.unpack_from("<Q", data, loc + 8)[0]
    n, cd_size, cd_off = struct.unpack_from("<QQQ", data, z64 + 32)
    cd, p = bytearray(), cd_off
    for _ in range(n):
        fixed = bytearray(data[p:p + 46])
        assert fixed[:4] == b"PK\x01\x02"
        csize, usize = struct.unpack_from("<II", fixed, 20)
        nl, xl, cl = struct.unpack_from("<HHH", fixed, 28)
        lho = struct.unpack_from("<I", fixed, 42)[0]
        rest = data[p + 46:p + 46 + nl + xl + cl]
        ext = struct.pack("<HHQQQ", 1, 24, usize, csize, lho)
        struct.pack_into("<II", fixed, 20, 0xFFFFFFFF, 0xFFFFFFFF)
        struct.pack_into("<I", fixed, 42, 0xFFFFFFFF)
        struct.pack_into("<H", fixed, 30, xl + len(ext))
        cd += fixed + rest[:nl] + ext + rest[nl:]
        p += 46 + nl + xl + cl
    body = data[:cd_off]
    rec = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), len(body))
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(body) + len(cd), 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + bytes(cd) + rec + locator + end


def entry(name, method=zipfile.ZIP_STORED):
    """A zip entry with a fixed date, so that the fixtures come out the same each run."""
    i = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    i.compress_type = method
    return i


def recompress(data):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zi, zipfile.ZipFile(out, "w") as zo:
        for i in zi.infolist():
            zo.writestr(entry(i.filename, zipfile.ZIP_DEFLATED), zi.read(i.filename))
    return out.getvalue()


# ---- hand-made checkpoints: pickles of fake storages and tensors ----
class Sto:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class Ten:
    def __init__(self, sto, off, size, stride, dtype=None):
        self.sto, self.off, self.size, self.stride, self.dtype = sto, off, size, stride, dtype

    def __reduce__(self):
        args = (self.sto, self.off, self.size, self.stride, False, collections.OrderedDict())
        if self.dtype is None:
            return (torch._utils._rebuild_tensor_v2, args)
        return (torch._utils._rebuild_tensor_v3, args + (self.dtype,))


def _rebuild_tensor_v3(*args):  # a stand-in so that torch 1.13 can pickle the name
    raise RuntimeError("never called")


_rebuild_tensor_v3.__module__ = "torch._utils"
if not hasattr(torch._utils, "_rebuild_tensor_v3"):
    torch._utils._rebuild_tensor_v3 = _rebuild_tensor_v3


class Pairs:
    """An OrderedDict in the pickle whose items are pairs as given (duplicates kept)."""
    def __init__(self, pairs):
        self.pairs = pairs

    def __reduce__(self):
        return (collections.OrderedDict, (), None, None, iter(self.pairs))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Sto):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def pickled(obj, protocol=2):
    b = io.BytesIO()
    Pickler(b, protocol=protocol).dump(obj)
    return b.getvalue()


def hand_zip(pkl, storages):
    """A stored zip in torch's layout around the pickle bytes pkl; storages: key -> bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(entry("archive/data.pkl"), pkl)
        for k, v in storages.items():
            z.writestr(entry("archive/data/" + k), v)
        z.writestr(entry("archive/version"), b"3\n")
    return out.getvalue()


def hand_made():
    f4 = np.arange(4, dtype="<f4").tobytes()
    s = Sto(torch.FloatStorage, "0", 4)
    good = lambda t: collections.OrderedDict([("w", t)])  # noqa: E731
    files = {
        "bad-opcode.pt": hand_zip(b"\x80\x02}q\x00X\x01\x00\x00\x00wI5\ns.", {}),
        "bad-global.pt": hand_zip(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x00'hi'\x85R.", {}),
        "bad-offset.pt": hand_zip(pickled(good(Ten(s, 2, (3,), (1,)))), {"0": f4}),
        "bad-shape.pt": hand_zip(pickled(good(Ten(s, 0, (1 << 40, 1 << 40, 1 << 40), (0, 0, 1)))),
                                 {"0": f4}),
        "bad-dim.pt": hand_zip(pickled(good(Ten(s, 0, (1 << 41,), (1,)))), {"0": f4}),
        "bad-storage.pt": hand_zip(pickled(good(Ten(Sto(torch.FloatStorage, "0", 100), 0, (4,), (1,)))),
                                   {"0": f4}),
        "bad-missing.pt": hand_zip(pickled(good(Ten(Sto(torch.FloatStorage, "7", 4), 0, (4,), (1,)))),
                                   {"0": f4}),
        "bad-stride.pt": hand_zip(pickled(good(Ten(s, 0, (2, 2), (1,)))), {"0": f4}),
        "bad-dup.pt": hand_zip(pickled(Pairs([("w", Ten(s, 0, (4,), (1,))), ("w", Ten(s, 0, (2,), (1,)))])),
                               {"0": f4}),
        "bad-list.pt": hand_zip(pickled([Ten(s, 0, (4,), (1,))]), {"0": f4}),
        "bad-notensor.pt": hand_zip(pickled({"epoch": 3}), {}),
    }
    h = np.array([1.0, -2.0, 0.5], dtype="<f2").tobytes()
    v3 = collections.OrderedDict([("h", Ten(Sto(torch.UntypedStorage, "0", 6), 0, (3,), (1,), torch.float16))])
    files["v3.pt"] = hand_zip(pickled(v3), {"0": h})
    return files


# ---- the tiny CLIP as a pytorch_model.bin ----
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32"
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(buf[b:e], dtype="<f4").reshape(v["shape"]).copy())
    return out


def tiny_clip_bin():
    sys.path.insert(0, HERE)
    import clip_ref
    with open(os.path.join(CLIP, "config.json")) as f:
        cfg = json.load(f)
    model = clip_ref.Clip(cfg).eval()
    model.load_state_dict(read_safetensors(os.path.join(CLIP, "tiny.safetensors")))
    sd = model.state_dict()
    grid = cfg["vision_config"]["image_size"] // cfg["vision_config"]["patch_size"]
    sd["text_model.embeddings.position_ids"] = torch.arange(77).expand((1, -1))
    sd["vision_model.embeddings.position_ids"] = torch.arange(grid * grid + 1).expand((1, -1))
    path = os.path.join(CLIP, "tiny.bin")
    torch.save(sd, path)
    back = torch.load(path)
    for k, v in read_safetensors(os.path.join(CLIP, "tiny.safetensors")).items():
        assert torch.equal(back[k], v), k


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = basic_state_dict()
    basic = save_bytes(sd)
    files = {"basic.pt": basic, "proto4.pt": save_bytes(sd, pickle_protocol=4), "zip64.pt": zip64ify(basic),
             "compressed.pt": recompress(basic),
             "noncontig.pt": save_bytes({"t": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()})}
    files.update(hand_made())
    for name, data in files.items():
        write(os.path.join(OUT, name), data)
    for name in ("basic.pt", "proto4.pt", "zip64.pt"):  # torch reads them back
        back = torch.load(os.path.join(OUT, name))
        assert all(torch.equal(back[k], v) for k, v in sd.items() if torch.is_tensor(v)), name
    tiny_clip_bin()
    print("wrote", OUT, "and", os.path.join(CLIP, "tiny.bin"))


if __name__ == "__main__":
    main()

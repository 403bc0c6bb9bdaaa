#!/usr/bin/python3
"""fedsm.py - the Python companion of the fedsm tools (README, "Python and plug-ins";
docs/plugins.md for plugging in a method).

What it is: one small module, standard library + numpy + msgpack + zstandard (PyTorch only
for the model functions), that
  - reads and writes record streams exactly as docs/format.md specifies them: every record
    of a multi-record stream, skippable frames passed over, the version and each `end`
    record's count checked; writes with the version, an `end` record, and a temporary name
    renamed into place (read_records, read_record, iter_records, write_record,
    write_records);
  - builds the PyTorch modules of every network the tools build (lib/models/model.c: the
    CIFAR ResNet family with its width, depth and optional projection, and ResNet-50), with
    the very tensor names, so that a model record loads as a ready torch.nn.Module
    (load_model) and a module saves as a model record the tools accept (save_model);
  - gives a shard's images as evaluate sees them (shard_arrays, normalize, predict).
What it is not: a trainer, or a second implementation of the tools' algorithms.

    import fedsm
    for rec in fedsm.read_records("round-001/update-03.mpk.zst"):
        print(rec.kind, rec.meta["client"], rec.tensors["fc.weight"].shape)
    net, classes = fedsm.load_model("round-010/model.mpk.zst")       # torch, eval mode
    fedsm.save_model(net, "mine.mpk.zst", like="round-010/model.mpk.zst")
"""
import math
import numbers
import os
import re
import struct
import sys

import msgpack
import numpy as np
import zstandard

torch = None  # imported on first use by _torch(): reading records does not pay its ~2 s import
_MODELS = None  # the module classes, defined once torch is there (_define_models)

__version__ = "0.1.0"
FORMAT_VERSION = 1
PRODUCER = "fedsm.py " + __version__
DTYPES = ("<f4", "<f2", "<i4", "<i8", "|u1")
MAX_DIMS = 8
MAX_TENSORS = 65536
_ZSTD_MAGIC = 0xFD2FB528
_SKIP_LO, _SKIP_HI = 0x184D2A50, 0x184D2A5F
_KIND_OK = re.compile(r"[a-z0-9_-]+\Z").match

# the one normalisation table of lib/data/norm.c
NORM = {"cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
CIFAR_ARCHS = ("resnet8", "cifar-resnet")
ARCHS = CIFAR_ARCHS + ("resnet50",)


class FormatError(ValueError):
    """A stream that is not a valid fedsm stream; the message names the stream, the record
    and the field, as the tools' exit-3 lines do."""


class Record:
    """One record: kind (str), meta (dict), tensors (dict name -> numpy array, in the
    stream's order).  Arrays read from a stream are read-only views of the decoded bytes
    (np.array(a) gives a writable copy)."""

    def __init__(self, kind, meta=None, tensors=None):
        self.kind = kind
        self.meta = dict(meta or {})
        self.tensors = dict(tensors or {})

    def __repr__(self):
        return "Record(%r, meta keys %s, %d tensors)" % (self.kind, sorted(self.meta), len(self.tensors))


# ---- reading ----
def _where(name, index, field=None):
    return "stream %s, record %d%s" % (name, index, ", field " + field if field else "")


def _key(k):
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else k


def _no_dup_map(pairs):
    d = {}
    for k, v in pairs:
        k = _key(k)
        if k in d:
            raise FormatError("duplicate key '%s'" % k)
        d[k] = v
    return d


def _check_value(v, depth, name, index, field):
    """meta values: nil, bool, int, float, str, arrays and maps of those (no ext, no bin)."""
    if depth > 32:
        raise FormatError("bad record (%s): nesting deeper than 32" % _where(name, index, field))
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str) or "\0" in k:
                raise FormatError("bad record (%s): a key that is not a NUL-free string" % _where(name, index, field))
            _check_value(x, depth + 1, name, index, field + "." + k)
    elif isinstance(v, list):
        for x in v:
            _check_value(x, depth + 1, name, index, field)
    elif isinstance(v, str):
        if "\0" in v:
            raise FormatError("bad record (%s): NUL byte in a string" % _where(name, index, field))
    elif isinstance(v, int) and not isinstance(v, bool) and not -(1 << 63) <= v < (1 << 63):
        raise FormatError("bad record (%s): integer %d outside int64" % (_where(name, index, field), v))
    elif v is not None and not isinstance(v, (bool, int, float)):
        raise FormatError("bad record (%s): value of type %s" % (_where(name, index, field), type(v).__name__))


def _tensor(t, name, index, tname):
    """msgpack-numpy map -> read-only numpy array, checked as record.c checks it."""
    where = _where(name, index, "tensors." + tname)
    if not isinstance(t, dict):
        raise FormatError("bad tensor (%s): not a map" % where)
    t = {_key(k): v for k, v in t.items()}
    extra = sorted(set(t) - {"nd", "type", "kind", "shape", "data"})
    if extra:
        raise FormatError("bad tensor (%s): unknown tensor key %r" % (where, extra[0]))
    typ, kind = _key(t.get("type")), _key(t.get("kind", ""))
    shape, data = t.get("shape"), t.get("data")
    if t.get("nd") is not True:
        raise FormatError("bad tensor (%s): nd is not true" % where)
    if typ == "<u1":
        typ = "|u1"
    if typ not in DTYPES:
        raise FormatError("bad tensor (%s): dtype %r (fedsm reads %s)" % (where, typ, " ".join(DTYPES)))
    if kind != "":
        raise FormatError("bad tensor (%s): numpy kind %r" % (where, kind))
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise FormatError("bad tensor (%s): shape %r" % (where, shape))
    if not isinstance(data, bytes):
        raise FormatError("bad tensor (%s): data is not bin" % where)
    dt = np.dtype(typ)
    if math.prod(shape) * dt.itemsize != len(data):
        raise FormatError("bad tensor (%s): shape %s of %s needs %d bytes, data has %d"
                          % (where, shape, typ, math.prod(shape) * dt.itemsize, len(data)))
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _decode(raw, name, index):
    try:
        m = msgpack.unpackb(raw, raw=False, strict_map_key=False, object_pairs_hook=_no_dup_map,
                            use_list=True)
    except FormatError as e:
        raise FormatError("bad record (%s): %s" % (_where(name, index), e)) from None
    except msgpack.ExtraData:
        raise FormatError("bad record (%s): bytes after the record in its frame" % _where(name, index)) from None
    except (ValueError, msgpack.UnpackException) as e:
        why = str(e) or ("nesting too deep" if "Stack" in type(e).__name__ else type(e).__name__)
        raise FormatError("bad record (%s): %s" % (_where(name, index), why)) from None
    if not isinstance(m, dict):
        raise FormatError("bad record (%s): not a map" % _where(name, index))
    v = m.get("fedsm")
    if type(v) is not int or v != FORMAT_VERSION:
        raise FormatError("bad record (%s): format version %r, this reader reads %d"
                          % (_where(name, index, "fedsm"), v, FORMAT_VERSION))
    kind = m.get("kind")
    if not isinstance(kind, str) or not kind:
        raise FormatError("bad record (%s): missing kind" % _where(name, index, "kind"))
    if not _KIND_OK(kind):
        raise FormatError("bad record (%s): kind %r is not a lower-case name" % (_where(name, index, "kind"), kind))
    meta = m.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("bad record (%s): meta is not a map" % _where(name, index, "meta"))
    _check_value(meta, 0, name, index, "meta")
    ts = m.get("tensors", {})
    if not isinstance(ts, dict):
        raise FormatError("bad record (%s): tensors is not a map" % _where(name, index, "tensors"))
    if len(ts) > MAX_TENSORS:
        raise FormatError("bad record (%s): %d tensors (at most %d)" % (_where(name, index), len(ts), MAX_TENSORS))
    for k in ts:
        if "\0" in k:
            raise FormatError("bad record (%s): a tensor name holds a NUL byte" % _where(name, index, "tensors"))
    return Record(kind, meta, {k: _tensor(t, name, index, k) for k, t in ts.items()})


def _source(src):
    """(bytes, name) of a path, '-' (stdin), bytes or a binary file object."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    if hasattr(src, "read"):
        return src.read(), getattr(src, "name", "<file>")
    if os.fspath(src) == "-":
        return sys.stdin.buffer.read(), "-"
    path = os.fspath(src)
    with open(path, "rb") as f:
        return f.read(), path


def iter_records(src, with_end=False):
    """Yields every record of a stream (a path, '-', bytes or a binary file), in order.
    Concatenated streams (`cat a b`) are read whole; zstd skippable frames are passed over;
    each `end` record's count is checked against the records since the previous one (an
    incomplete stream, or one holding more than it declares, raises FormatError; a stream
    without an end record is accepted, as the tools accept it).  End records themselves are
    yielded only with with_end=True.  Raises FormatError naming stream, record and field."""
    data, name = _source(src)
    if not data:
        raise FormatError("no records in %s (empty stream)" % name)
    view, pos, n = memoryview(data), 0, len(data)
    index = seg = 0
    while pos < n:
        if n - pos < 4:
            raise FormatError("truncated stream (stream %s, byte %d): %d stray bytes" % (name, pos, n - pos))
        magic = struct.unpack_from("<I", data, pos)[0]
        if _SKIP_LO <= magic <= _SKIP_HI:
            if n - pos < 8 or pos + 8 + struct.unpack_from("<I", data, pos + 4)[0] > n:
                raise FormatError("truncated stream (stream %s, byte %d): a skippable frame cut short" % (name, pos))
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
            continue
        if magic != _ZSTD_MAGIC:
            raise FormatError("bad record (%s): not a zstd frame (magic %08x)" % (_where(name, index), magic))
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            raw = d.decompress(view[pos:])
        except zstandard.ZstdError as e:
            raise FormatError("bad record (%s): zstd: %s" % (_where(name, index), e)) from None
        if not d.eof:
            raise FormatError("truncated stream (%s): the frame ends early" % _where(name, index))
        pos = n - len(d.unused_data)
        rec = _decode(raw, name, index)
        if rec.kind == "end":
            count = rec.meta.get("count")
            if type(count) is not int or count < 0:
                raise FormatError("bad end record (%s)" % _where(name, index, "meta.count"))
            if count < seg:
                raise FormatError("stream %s holds more records than it declares: its end record counts %d records, %d read"
                                  % (name, count, seg))
            if count > seg:
                raise FormatError("stream %s is incomplete: its end record counts %d records, %d read" % (name, count, seg))
            seg = 0
            if with_end:
                yield rec
            continue
        index += 1
        seg += 1
        yield rec


def read_records(src, with_end=False):
    """Every record of a stream, as a list (see iter_records)."""
    return list(iter_records(src, with_end))


def read_record(src, kind=None):
    """The stream's first record (the whole stream is read and checked); kind, when given,
    must match (a str or a tuple of accepted kinds)."""
    recs = read_records(src)
    name = src if isinstance(src, (str, os.PathLike)) else "<stream>"
    if not recs:
        raise FormatError("no records in %s (empty stream)" % name)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and recs[0].kind not in kinds:
        raise FormatError("wrong record kind (stream %s, record 0, field kind): expected %s, got %s"
                          % (name, " or ".join(kinds), recs[0].kind))
    return recs[0]


# ---- writing ----
def _plain(v, field):
    """A meta value as msgpack packs it: numpy scalars and arrays, tuples become plain."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError("meta key %r of %s is not a str" % (k, field))
            out[k] = _plain(x, field + "." + k)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, field) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist(), field)
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError("meta %s: a %s cannot go into a record (nil, bool, int, float, str, lists, maps)"
                    % (field, type(v).__name__))


def _array(a, name):
    t = sys.modules.get("torch")
    if t is not None and isinstance(a, t.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if le.str not in DTYPES:
        raise TypeError("tensor %s: dtype %s is not in the format (%s); cast it, e.g. "
                        "a.astype(np.float32)" % (name, a.dtype.str, " ".join(DTYPES)))
    if a.ndim > MAX_DIMS:
        raise TypeError("tensor %s: %d dimensions (at most %d)" % (name, a.ndim, MAX_DIMS))
    return np.asarray(a, dtype=le, order="C")  # (ascontiguousarray would make a scalar 1-d)


def _frame(kind, meta, tensors):
    ts = {}
    for k, a in (tensors or {}).items():
        a = _array(a, k)
        ts[k] = {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
    raw = msgpack.packb({"fedsm": FORMAT_VERSION, "kind": kind, "meta": _plain(meta or {}, "meta"),
                         "tensors": ts}, use_bin_type=True)
    return zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(raw)


def _remove_stale(path):
    """A path.tmp.PID of a dead writer of this user (a SIGKILLed one) is removed, as the
    tools do (docs/format.md, endpoints)."""
    d, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(d)
    except OSError:
        return
    for f in names:
        pid = f[len(base) + 5:]
        if not f.startswith(base + ".tmp.") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:
            pass
        except OSError:
            continue
        p = os.path.join(d, f)
        try:
            if os.stat(p).st_uid == os.getuid():
                os.unlink(p)
        except OSError:
            pass


def write_records(dst, records):
    """Writes records (Record objects or (kind, meta, tensors) tuples) and an `end` record
    with their count to dst: a path, written to PATH.tmp.PID and renamed when complete
    (removed on any error), or '-' (stdout, refused when it is a terminal).  Tensors are
    numpy arrays (or torch tensors) of <f4 <f2 <i4 <i8 |u1; meta values plain Python or
    numpy scalars.  Frames carry their content size and zstd's checksum."""
    frames = []
    for r in records:
        kind, meta, tensors = (r.kind, r.meta, r.tensors) if isinstance(r, Record) else r
        if not isinstance(kind, str) or not kind or kind == "end":
            raise ValueError("record kind %r (a non-empty name other than 'end')" % (kind,))
        frames.append(_frame(kind, meta, tensors))
    frames.append(_frame("end", {"count": len(frames)}, {}))
    if os.fspath(dst) == "-":
        if sys.stdout.isatty():
            raise OSError("refusing to write binary records to a terminal")
        for f in frames:
            sys.stdout.buffer.write(f)
        sys.stdout.buffer.flush()
        return
    path = os.fspath(dst)
    _remove_stale(path)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            for fr in frames:
                f.write(fr)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_record(dst, kind, meta=None, tensors=None):
    """One record and its `end` record (see write_records)."""
    write_records(dst, [(kind, meta, tensors)])


# ---- shards: the images as evaluate sees them ----
def _eval_transform(data, size):
    """torchvision's Resize(round(size*256/224)) + CenterCrop(size) on PIL, as lib/data/
    imgaug.c computes it (bilinear; the shorter side to the resize, the longer truncated)."""
    import io
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    im = im.convert("RGB")
    r = (size * 256 + 112) // 224
    w, h = im.size
    oh, ow = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
    if (ow, oh) != (w, h):
        im = im.resize((ow, oh), Image.BILINEAR)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def shard_arrays(shard, size=None):
    """(images uint8 [N,3,H,W], labels int64 [N]) of a shard record (or its path).  Encoded
    (JPEG/PNG) shards are decoded with PIL and given evaluate's transform at `size` (the
    model's input size; needed for them)."""
    rec = read_record(shard, "shard") if not isinstance(shard, Record) else shard
    labels = rec.tensors["labels"].astype(np.int64)
    if "images" in rec.tensors:
        return np.asarray(rec.tensors["images"]), labels
    if size is None:
        raise ValueError("an encoded shard needs size= (the model's input_size)")
    jpeg, off = rec.tensors["jpeg"], rec.tensors["offsets"]
    imgs = np.stack([_eval_transform(jpeg[off[i]:off[i + 1]].tobytes(), size) for i in range(len(labels))])
    return imgs, labels


def normalize(images, mean, std):
    """uint8 [N,C,H,W] -> float32, x * (1 / (255 std)) - mean / std per channel, computed in
    float32 as lib/data/shard.c does (bit for bit the tools' input)."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    sc = np.float32(1.0) / (np.float32(255.0) * std)
    off = mean / std
    c = images.shape[1]
    idx = np.arange(c) % 3
    return images.astype(np.float32) * sc[idx][None, :, None, None] - off[idx][None, :, None, None]


# ---- the networks (torch) ----
def _torch(what):
    """Imports PyTorch and defines the module classes on first use."""
    global torch, _MODELS
    if _MODELS is None:
        try:
            import torch as t
        except ImportError:
            raise ImportError("%s needs PyTorch (Debian: apt-get install python3-torch)" % what) from None
        torch = t
        _MODELS = _define_models()
    return torch


def __getattr__(name):
    """fedsm.CifarResNet, fedsm.ResNet50, fedsm.BasicBlock, fedsm.Bottleneck: PyTorch classes,
    defined on first access."""
    if name in ("CifarResNet", "ResNet50", "BasicBlock", "Bottleneck"):
        _torch("fedsm." + name)
        return _MODELS[name]
    raise AttributeError("module 'fedsm' has no attribute '%s'" % name)


def _define_models():
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN where the shape changes), ReLU."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        """torchvision's bottleneck (stride on the 3x3 conv), expansion 4."""

        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if downsample:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    class _Net(nn.Module):
        """What both families share: the config the records carry, features() and forward()."""

        def _head(self, pool_dim, num_classes, proj_dim):
            self.pool_dim = pool_dim
            self.proj = nn.Linear(pool_dim, proj_dim) if proj_dim else None
            self.feat_dim = proj_dim or pool_dim
            self.fc = nn.Linear(self.feat_dim, num_classes)

        def pooled(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            if self.arch == "resnet50":
                x = F.max_pool2d(x, 3, 2, 1)
            for layer in self.layers:
                x = layer(x)
            return x.mean(dim=(2, 3))

        def features(self, x):
            """The feature the classifier sees: the proj output, else the pooled vector."""
            p = self.pooled(x)
            return self.proj(p) if self.proj is not None else p

        def forward(self, x):
            return self.fc(self.features(x))

        def config(self):
            """The architecture keys of a model record's meta."""
            return {"arch": self.arch, "depth": self.depth, "width": self.width,
                    "num_classes": self.num_classes, "proj_dim": self.proj_dim,
                    "feat_dim": self.feat_dim, "input_size": self.input_size,
                    "in_channels": self.in_channels}

    class CifarResNet(_Net):
        """The CIFAR ResNet family (arch resnet8 / cifar-resnet): conv3x3 3->w, BN, ReLU; three
        stages of (depth-2)/6 BasicBlocks with w, 2w, 4w channels (strides 1, 2, 2); global
        average pool; optional proj Linear(4w, proj_dim); fc.  resnet8 = depth 8, width 64."""

        def __init__(self, num_classes=10, depth=8, width=64, proj_dim=0, input_size=32,
                     in_channels=3, arch="resnet8"):
            super().__init__()
            if arch not in CIFAR_ARCHS or depth < 8 or (depth - 2) % 6:
                raise ValueError("CIFAR ResNet: arch %r, depth %d (6n+2: 8, 14, 20, ...)" % (arch, depth))
            self.arch, self.depth, self.width, self.num_classes = arch, depth, width, num_classes
            self.proj_dim, self.input_size, self.in_channels = proj_dim, input_size, in_channels
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin, n = width, (depth - 2) // 6
            for s in range(3):
                blocks = []
                for j in range(n):
                    blocks.append(BasicBlock(cin, width << s, 2 if s > 0 and j == 0 else 1))
                    cin = width << s
                setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
            self.layers = [self.layer1, self.layer2, self.layer3]
            self._head(cin, num_classes, proj_dim)

    class ResNet50(_Net):
        """torchvision's ResNet-50 (conv7x7 s2, BN, ReLU, maxpool 3x3 s2, bottleneck stages
        [3, 4, 6, 3] of width, 2w, 4w, 8w planes), optional proj, fc.  width 64 = torchvision."""

        def __init__(self, num_classes=1000, width=64, proj_dim=0, input_size=224, in_channels=3,
                     depth=50, arch="resnet50"):
            super().__init__()
            if arch != "resnet50" or depth != 50:
                raise ValueError("ResNet-50: arch %r depth %d" % (arch, depth))
            self.arch, self.depth, self.width, self.num_classes = arch, 50, width, num_classes
            self.proj_dim, self.input_size, self.in_channels = proj_dim, input_size, in_channels
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin = width
            for s, nb in enumerate((3, 4, 6, 3)):
                blocks = []
                for j in range(nb):
                    blocks.append(Bottleneck(cin, width << s, 2 if s > 0 and j == 0 else 1, j == 0))
                    cin = (width << s) * 4
                setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
            self.layers = [self.layer1, self.layer2, self.layer3, self.layer4]
            self._head(cin, num_classes, proj_dim)

    classes = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck, "CifarResNet": CifarResNet, "ResNet50": ResNet50}
    for c in classes.values():
        c.__qualname__ = c.__name__  # pickle (torch.save of a whole module) finds fedsm.NAME
    return classes


def build_model(meta):
    """The (untrained) module a model record's meta describes: arch, depth, width,
    num_classes, proj_dim, input_size, in_channels (the C defaults where absent)."""
    _torch("build_model")
    arch = meta.get("arch")
    if arch not in ARCHS:
        raise FormatError("model meta: unknown arch %r (%s)" % (arch, ", ".join(ARCHS)))
    kw = {"arch": arch, "num_classes": int(meta["num_classes"]), "width": int(meta["width"]),
          "depth": int(meta["depth"]), "proj_dim": int(meta.get("proj_dim", 0) or 0),
          "in_channels": int(meta.get("in_channels", 3))}
    kw["input_size"] = int(meta.get("input_size", 224 if arch == "resnet50" else 32))
    return _MODELS["ResNet50" if arch == "resnet50" else "CifarResNet"](**kw)


def _state_from_record(module, rec, where):
    """Copies rec's tensors into module (every parameter and BN buffer, by name, dtype <f4,
    shape checked; num_batches_tracked optional), as model_load_record does."""
    sd = module.state_dict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        a = rec.tensors.get(k)
        if a is None:
            raise FormatError("%s: tensor '%s' missing (not a %s model with these sizes)" % (where, k, module.arch))
        if a.dtype != np.float32 or tuple(a.shape) != tuple(v.shape):
            raise FormatError("%s: tensor '%s' is %s %s, expected <f4 %s" % (where, k, a.dtype.str, list(a.shape), list(v.shape)))
    for k in rec.tensors:
        if k not in sd:
            raise FormatError("%s: tensor '%s' is not part of a %s model" % (where, k, module.arch))
    new = {}
    for k, v in sd.items():
        a = rec.tensors.get(k)
        new[k] = torch.from_numpy(np.array(a)) if a is not None else v.clone()
        if k.endswith("num_batches_tracked"):
            new[k] = new[k].reshape(()).to(torch.int64)
    module.load_state_dict(new, strict=True)


def load_model(src, device="cpu"):
    """(module, class_names) from a model (or update) record: the ready torch.nn.Module in
    eval mode, float32, on device, with the record's meta as module.fedsm_meta and the class
    names as module.classes (meta.classes, else "0".."C-1").  Its outputs on normalize()d
    images are evaluate's, to float rounding."""
    _torch("load_model")
    rec = src if isinstance(src, Record) else read_record(src, ("model", "update"))
    if rec.kind not in ("model", "update"):
        raise FormatError("wrong record kind: expected model or update, got %s" % rec.kind)
    for k in ("arch", "depth", "width", "num_classes"):
        if k not in rec.meta:
            raise FormatError("model record: meta.%s missing" % k)
    module = build_model(rec.meta)
    _state_from_record(module, rec, "model record (%s)" % (src if isinstance(src, (str, os.PathLike)) else "in memory"))
    classes = rec.meta.get("classes")
    if not (isinstance(classes, list) and len(classes) == module.num_classes):
        classes = [str(i) for i in range(module.num_classes)]
    module.fedsm_meta = dict(rec.meta)
    module.classes = list(classes)
    return module.to(device).eval(), list(classes)


def _default_meta(module):
    if not hasattr(module, "config"):
        raise ValueError("save_model: this module is not one of fedsm.py's; give like= a model "
                         "record of its architecture (its tensors must have the same names and shapes)")
    meta = dict(getattr(module, "fedsm_meta", None) or {})
    mean, std = NORM["imagenet" if module.arch == "resnet50" else "cifar"]
    meta.setdefault("mean", list(mean))
    meta.setdefault("std", list(std))
    meta.setdefault("round", 0)
    if getattr(module, "classes", None) and "classes" not in meta:
        meta["classes"] = list(module.classes)
    return meta


def save_model(module, dst, like=None, kind="model", meta=None):
    """Writes module's state_dict as a model record the tools accept (every float tensor as
    <f4, each BN's num_batches_tracked as an <i8 scalar).  The meta is like's (a model record,
    its path, or a meta dict) when given, else the module's own (load_model's record, or its
    config with the architecture's default normalisation and round 0); then the module's
    architecture keys, producer "fedsm.py VERSION", without like's `inputs`; then `meta`
    (a dict) on top.  With like, the module's tensor names and shapes must equal like's, so a
    torchvision resnet50 saves with like= a fedsm resnet50 record.  kind "update" needs meta
    client, round and num_samples (aggregate reads them)."""
    _torch("save_model")
    sd = module.state_dict()
    if like is not None:
        lrec = like if isinstance(like, (Record, dict)) else read_record(like, ("model", "update"))
        base = dict(lrec if isinstance(lrec, dict) else lrec.meta)
        if isinstance(lrec, Record):
            mine = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
            theirs = {k: tuple(a.shape) for k, a in lrec.tensors.items() if not k.endswith("num_batches_tracked")}
            if mine != theirs:
                diff = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
                raise ValueError("save_model: the module's tensors differ from like's (first: %s)" % diff[0])
    else:
        base = _default_meta(module)
    if hasattr(module, "config"):
        base.update(module.config())
    base.pop("inputs", None)
    base["producer"] = PRODUCER
    base.update(meta or {})
    for k in ("arch", "depth", "width", "num_classes"):
        if k not in base:
            raise ValueError("save_model: meta.%s unknown (give like= or meta=)" % k)
    if kind == "update":
        for k in ("client", "round", "num_samples"):
            if k not in base:
                raise ValueError("save_model: an update needs meta.%s" % k)
    tensors = {}
    for k, v in sd.items():
        a = v.detach().cpu()
        if k.endswith("num_batches_tracked"):
            tensors[k] = a.to(torch.int64).reshape(()).numpy()
        elif a.is_floating_point():
            tensors[k] = a.to(torch.float32).numpy()
        else:
            raise TypeError("save_model: tensor %s has dtype %s" % (k, a.dtype))
    write_record(dst, kind, base, tensors)


def predict(module, images, mean, std, batch=500):
    """Logits (numpy float32 [N,C]) of module in eval mode on uint8 images [N,3,H,W],
    normalised as the tools do."""
    _torch("predict")
    module.eval()
    out = []
    dev = next(module.parameters()).device
    with torch.no_grad():
        for b in range(0, len(images), batch):
            x = torch.from_numpy(normalize(images[b:b + batch], mean, std)).to(dev)
            out.append(module(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, module.num_classes), np.float32)


def _main(argv):
    """python3 fedsm.py STREAM...: one line per record (kind, meta keys, tensors)."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fedsm.py STREAM...\n"
              "Lists each record of fedsm streams (kind, meta, tensor dtypes and shapes), after\n"
              "checking them as the tools do; as a module: import fedsm (see its docstring).\n"
              "exit: 0 ok, 3 bad input format, 4 I/O")
        return 0
    for p in argv:
        try:
            for i, r in enumerate(iter_records(p)):
                print("%s record %d: %s %s" % (p, i, r.kind, {k: v for k, v in r.meta.items() if k != "inputs"}))
                for k, a in r.tensors.items():
                    print("  %s %s %s" % (k, a.dtype.str, list(a.shape)))
        except FormatError as e:
            print("fedsm.py: error: %s" % e, file=sys.stderr)
            return 3
        except OSError as e:
            print("fedsm.py: error: cannot read %s: %s" % (p, e.strerror or e), file=sys.stderr)
            return 4
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

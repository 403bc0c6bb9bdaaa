#!/usr/bin/python3
"""make_corpus.py BIN DIR - the corpus and the case list of the hostile-input matrix
(tests/tools/hostile.sh runs it; tests/hostile/expect.txt holds what each case must exit with).

Writes into DIR:
  base/      small valid records made by the tools themselves (gen-demo -> partition ->
             aggregate --init -> local-train -> aggregate -> featgen -> retrain -> evaluate,
             clip-embed with the tests' tiny CLIP): width-2 ResNet-8 with a 24-d projection,
             10 classes, 34 images a client; a few seconds in all
  c/KEY/     each base stream damaged in every way of docs/format.md's refusal list
             (empty, end record only, cut at three offsets, a flipped byte, trailing
             garbage, end count one short and one over, another kind, another version) and,
             per kind, in its meaning (wrong dtype, rank, shape, 2^40 declared elements, NaN
             and Inf, negative and overflowing counts, a required meta field or tensor gone);
             plus a directory, a missing path and /dev/null
  cases.jsonl one JSON object a case: scenario, slot (in:OPTION for an input, opt:OPTION for
             an option value), case, tool (the binary), argv, out (the folder the case
             writes into and that must be empty after a failure), and for some cases a
             special check
Every case is one valid command of a scenario with one thing made hostile, so a tool that
accepts the hostile thing runs to the end and exits 0, which the matrix reports.
Needs Debian's python3-numpy, -msgpack, -zstandard (and PIL for the JPEG case)."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import msgpack
import numpy as np
import zstandard

BIN, DIR = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(DIR, "base")
CORP = os.path.join(DIR, "c")
OUTS = os.path.join(DIR, "o")
HUGE = "99999999999999999999"


# ---- records: decode and encode by hand (docs/format.md), no fedsm code ----
def frames(data):
    """The records of a stream, every frame decoded on its own (end records included)."""
    out = []
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        out.append(msgpack.unpackb(d.decompress(data), raw=False, strict_map_key=False))
        data = d.unused_data
    return out


def frame(rec):
    c = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    return c.compress(msgpack.packb(rec, use_bin_type=True))


def end(n):
    return frame({"fedsm": 1, "kind": "end", "meta": {"count": n}, "tensors": {}})


def stream(recs, count=None):
    body = [r for r in recs if r["kind"] != "end"]
    return b"".join(frame(r) for r in body) + end(len(body) if count is None else count)


def arr(t):
    return np.frombuffer(t["data"], dtype=np.dtype(t["type"])).reshape(t["shape"]).copy()


def put(t, a):
    t["type"], t["shape"], t["data"] = a.dtype.str, list(a.shape), a.tobytes()


# ---- the base records, made by the tools ----
def tool(*args, **kw):
    r = subprocess.run([os.path.join(BIN, args[0])] + [str(a) for a in args[1:]] + ["-q"],
                       cwd=BASE, capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit("make_corpus: %s failed (exit %d): %s" % (" ".join(args), r.returncode, r.stderr))


def make_base():
    os.makedirs(BASE)
    subprocess.run([os.path.join(BIN, "gen-demo"), "data", "10", "2"], cwd=BASE, check=True,
                   capture_output=True)
    tool("partition", "--in", "data", "-o", "P", "--if", 2, "--clients", 2)
    for k in ("client-00", "client-01", "test", "partition"):
        os.rename("%s/P/%s.mpk.zst" % (BASE, k), "%s/%s.mpk.zst" % (BASE, k))
    tool("aggregate", "--init", "resnet8", "--partition", "partition.mpk.zst", "--width", 2,
         "--proj", 24, "-o", "model.mpk.zst")
    for c in ("00", "01"):
        tool("local-train", "-m", "model.mpk.zst", "-d", "client-%s.mpk.zst" % c, "--epochs", 1,
             "--batch", 8, "-o", "update-%s.mpk.zst" % c, "--gradients", "grad-%s.mpk.zst" % c,
             "--grad-repeats", 1, "--grad-batch", 2, "--prototypes", "proto-%s.mpk.zst" % c)
    tool("aggregate", "--gradients", "-o", "grads.mpk.zst", "grad-00.mpk.zst", "grad-01.mpk.zst")
    tool("aggregate", "--prototypes", "-o", "protos.mpk.zst", "proto-00.mpk.zst", "proto-01.mpk.zst")
    with open(BASE + "/merges.txt.gz", "wb") as f:  # no merges: ids stay in the tiny vocabulary
        f.write(zlib_gzip(b"#version: test\n"))
    tool("clip-embed", "-w", ROOT + "/tests/fixtures/clip/tiny.safetensors", "--vocab",
         "merges.txt.gz", "-s", "client-00.mpk.zst", "-s", "client-01.mpk.zst", "-o", "clip.mpk.zst")
    shutil.copy(BASE + "/data/batches.meta.txt", BASE + "/classes.txt")
    tool("clip-embed", "--import", "data/class_embeddings.npy", "--classes", "classes.txt",
         "-o", "rel.mpk.zst")
    tool("featgen", "--method", "creff", "-m", "model.mpk.zst", "-g", "grads.mpk.zst", "--iters", 2,
         "--per-class", 3, "-o", "feat-creff.mpk.zst")
    for c in ("00", "01"):
        tool("featgen", "--method", "fedsm", "-m", "model.mpk.zst", "-d", "client-%s.mpk.zst" % c,
             "-P", "protos.mpk.zst", "-r", "rel.mpk.zst", "--per-class", 3,
             "-o", "feat-fedsm-%s.mpk.zst" % c)
        tool("retrain", "--features", "feat-fedsm-%s.mpk.zst" % c, "-m", "model.mpk.zst",
             "--epochs", 1, "--batch", 8, "--as-update", "-o", "head-%s.mpk.zst" % c)
    tool("retrain", "--features", "feat-creff.mpk.zst", "-m", "model.mpk.zst", "--epochs", 1,
         "--batch", 8, "-o", "retrained.mpk.zst")
    tool("evaluate", "-m", "model.mpk.zst", "--test", "test.mpk.zst", "-p", "partition.mpk.zst",
         "-o", "metrics.mpk.zst")


def zlib_gzip(b):
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(b) + c.flush()


# ---- the damage ----
def generic(data):
    """Damage any stream can take: name -> bytes (or a path)."""
    recs = frames(data)
    first = len(frame(recs[0]))
    n = len([r for r in recs if r["kind"] != "end"])
    flip = bytearray(data)
    flip[first // 2] ^= 0x55  # inside the first frame's compressed block
    m = {
        "empty": b"",
        "end-only": end(0),
        "trunc-header": data[:5],
        "trunc-half": data[: len(data) // 2],
        "trunc-last": data[:-1],
        "flip": bytes(flip),
        "garbage": data + b"\x00trailing garbage\n",
        "end-small": stream(recs, n - 1),
        "end-large": stream(recs, n + 1),
        "version": stream([dict(r, fedsm=2) for r in recs]),
    }
    return m


def retype(t, typ):
    """Same bytes read as another dtype (the last dimension rescaled to fit)."""
    old, new = np.dtype(t["type"]).itemsize, np.dtype(typ).itemsize
    shp = list(t["shape"]) or [1]
    shp[-1] = shp[-1] * old // new
    t["type"], t["shape"] = typ, shp


def set_first(t, v):
    a = arr(t)
    a.flat[0] = v
    put(t, a)


def cut_first_dim(t):
    a = arr(t)
    put(t, a[1:] if a.shape and a.shape[0] > 1 else a.reshape(-1)[:0])


# per kind: the records damaged (a kind test on each record), the main tensor, a float tensor
# for NaN/Inf, and the kind's own damage: name -> function(record) changing it in place
def meta_del(*keys):
    return lambda r: [r["meta"].pop(k, None) for k in keys]


def meta_set(key, v):
    return lambda r: r["meta"].__setitem__(key, v)


def tensor_op(name, f):
    return lambda r: f(r["tensors"][name])


def tensor_del(name):
    return lambda r: r["tensors"].pop(name)


MODEL_OWN = {
    "no-arch": meta_del("arch"),
    "no-num_classes": meta_del("num_classes"),
    "input-size-0": meta_set("input_size", 0),
    "zero-std": meta_set("std", [0.0, 0.0, 0.0]),
    "nan-var": tensor_op("bn1.running_var", lambda t: set_first(t, np.nan)),
    "neg-var": tensor_op("bn1.running_var", lambda t: set_first(t, -1.0)),
    "inf-var": tensor_op("bn1.running_var", lambda t: set_first(t, np.inf)),
    "neg-round": meta_set("round", -5),
    # a 2 TB model declared by a 6 KB record: refused, not allocated
    "absurd-width": lambda r: r["meta"].update(width=4096, depth=9998),
}
KINDS = {
    # kind: (record kind, main tensor, float tensor, own damage)
    "model": ("model", "fc.weight", "conv1.weight", MODEL_OWN),
    "update": ("update", "fc.weight", "conv1.weight", dict(MODEL_OWN, **{
        "neg-samples": meta_set("num_samples", -5),
        "zero-samples": meta_set("num_samples", 0),
        "huge-samples": meta_set("num_samples", (1 << 63) - 1),
        "no-num_samples": meta_del("num_samples"),
        "huge-round": meta_set("round", (1 << 63) - 1)})),
    "shard": ("shard", "labels", None, {
        "neg-label": tensor_op("labels", lambda t: set_first(t, -1)),
        "big-label": tensor_op("labels", lambda t: set_first(t, 10)),
        "no-images": tensor_del("images"),
        "no-classes": meta_del("classes"),
        "zero-std": meta_set("std", [0.0, 0.0, 0.0]),
        "no-samples": lambda r: [put(r["tensors"][k], arr(r["tensors"][k])[:0])
                                 for k in ("images", "labels", "index")]}),
    "partition": ("partition", "class_counts", None, {  # what evaluate reads
        "neg-count": tensor_op("class_counts", lambda t: set_first(t, -5)),
        "huge-count": tensor_op("class_counts", lambda t: set_first(t, (1 << 63) - 1)),
        "no-classes": meta_del("classes", "num_classes")}),
    "gradients": ("gradients", "weight", "weight", {
        "neg-count": tensor_op("counts", lambda t: set_first(t, -5)),
        "bad-class": tensor_op("classes", lambda t: set_first(t, 99)),
        "nan-bias": tensor_op("bias", lambda t: set_first(t, np.nan))}),
    "prototypes": ("prototypes", "means", "means", {
        "neg-count": tensor_op("counts", lambda t: set_first(t, -5)),
        "huge-count": tensor_op("counts", lambda t: set_first(t, (1 << 63) - 1))}),
    "features": ("features", "features", "features", {
        "neg-label": tensor_op("labels", lambda t: set_first(t, -1)),
        "big-label": tensor_op("labels", lambda t: set_first(t, 10)),
        "no-features": lambda r: [put(r["tensors"][k], arr(r["tensors"][k])[:0])
                                  for k in ("features", "labels")],
        "neg-samples": meta_set("num_samples", -5),
        "huge-samples": meta_set("num_samples", (1 << 63) - 1)}),
    "embeddings": ("embeddings", "relevance", "relevance", {}),
    "embeddings-text": ("embeddings", "text", "text", {}),  # what clip2fl and --import read
    "teacher": ("teacher", "logits", "logits", {
        "neg-index": tensor_op("index", lambda t: set_first(t, -1)),
        "no-client": meta_del("client")}),
    "metrics": ("metrics", "per_class", "per_class", {}),
}


def specific(data, kind):
    rk, main, flt, own = KINDS[kind]
    recs = frames(data)
    hit = [r for r in recs if r["kind"] == rk]
    assert hit, (kind, [r["kind"] for r in recs])

    def mutate(f):
        new = [dict(r, meta=dict(r["meta"]), tensors={k: dict(v) for k, v in r["tensors"].items()})
               for r in recs]
        for r in new:
            if r["kind"] == rk:
                f(r)
        return stream(new)
    other = "model" if rk == "shard" else "shard"
    m = {
        "kind": mutate(lambda r: r.__setitem__("kind", other)),
        "dtype": mutate(tensor_op(main, lambda t: retype(t, "<f4" if t["type"] in ("<i4",) else
                                                         "<i4" if t["type"] == "<f4" else "<f4"))),
        "rank": mutate(tensor_op(main, lambda t: t.__setitem__(
            "shape", [int(np.prod(t["shape"]))] if len(t["shape"]) > 1 else list(t["shape"]) + [1]))),
        "shape": mutate(tensor_op(main, cut_first_dim)),
        "absurd": mutate(tensor_op(main, lambda t: t.__setitem__("shape", [1 << 20, 1 << 20]))),
        "no-" + main: mutate(tensor_del(main)),
    }
    if flt:
        m["nan"] = mutate(tensor_op(flt, lambda t: set_first(t, np.nan)))
        m["inf"] = mutate(tensor_op(flt, lambda t: set_first(t, np.inf)))
    for name, f in own.items():
        m[name] = mutate(f)
    return m


# which base stream each input slot reads, as (base file, kind)
SOURCES = {
    "model": ("model.mpk.zst", "model"), "update": ("update-00.mpk.zst", "update"),
    "head": ("head-00.mpk.zst", "update"), "shard": ("client-00.mpk.zst", "shard"),
    "test": ("test.mpk.zst", "shard"), "partition": ("partition.mpk.zst", "partition"),
    "grads": ("grads.mpk.zst", "gradients"), "proto": ("proto-00.mpk.zst", "prototypes"),
    "protos": ("protos.mpk.zst", "prototypes"), "rel": ("rel.mpk.zst", "embeddings"),
    "rel-text": ("rel.mpk.zst", "embeddings-text"),
    "clip": ("clip.mpk.zst", "embeddings-text"), "teacher": ("clip.mpk.zst", "teacher"),
    "feat-creff": ("feat-creff.mpk.zst", "features"),
    "feat-fedsm": ("feat-fedsm-00.mpk.zst", "features"),
    "retrained": ("retrained.mpk.zst", "model"), "metrics": ("metrics.mpk.zst", "metrics"),
}
made = {}


def corpus(src, only_generic=False):
    """The damaged versions of base source `src`: case -> path."""
    key = (src, only_generic)
    if key in made:
        return made[key]
    fname, kind = SOURCES[src]
    with open(os.path.join(BASE, fname), "rb") as f:
        data = f.read()
    d = os.path.join(CORP, src + ("-g" if only_generic else ""))
    os.makedirs(d)
    cases = generic(data)
    if not only_generic:
        cases.update(specific(data, kind))
    paths = {}
    for name, b in cases.items():
        p = os.path.join(d, name + ".mpk.zst")
        with open(p, "wb") as f:
            f.write(b)
        paths[name] = p
    os.makedirs(os.path.join(d, "dir.mpk.zst"))
    paths["dir"] = os.path.join(d, "dir.mpk.zst")
    paths["missing"] = os.path.join(d, "missing.mpk.zst")
    paths["devnull"] = "/dev/null"
    made[key] = paths
    return paths


# ---- the scenarios: one valid command each, its input slots and its options ----
# argv words "{name}" are base files (or, for the slot under test, the damaged one); "{o}" is
# the case's output folder.  opts: option -> value class (pos: integer >= 1, nat: integer
# >= 0, real: a number in a range, enum: a word from a list).
def B(name):
    return os.path.join(BASE, SOURCES[name][0]) if name in SOURCES else os.path.join(BASE, name)


SCENARIOS = [
    dict(name="inspect", tool="inspect", argv=["{metrics}"], generic_only=True,
         inputs={"STREAM": "metrics"},
         opts={"--record": "nat", "--timeout": "real", "--producers": "pos", "--max-msg": "int"}),
    dict(name="inspect-tensor", tool="inspect", argv=["--tensor", "per_class", "-o", "{o}/x.npy",
                                                      "{metrics}"], generic_only=True,
         inputs={"STREAM": "metrics"}, opts={}),
    dict(name="local-train", tool="local-train",
         argv=["-m", "{model}", "-d", "{shard}", "--teacher", "{teacher}", "--epochs", "1",
               "--batch", "8", "-o", "{o}/u.mpk.zst"],
         inputs={"-m": "model", "-d": "shard", "--teacher": "teacher"},
         opts={"--epochs": "nat", "--batch": "pos", "--lr": "real", "--momentum": "real01",
               "--wd": "real", "--kd-alpha": "real", "--kd-temp": "realpos", "--round": "nat",
               "--client": "int", "--timeout": "real", "--aug": "enum"}),
    dict(name="local-train-stages", tool="local-train",
         argv=["-m", "{model}", "-d", "{shard}", "--epochs", "0", "--gradients", "{o}/g.mpk.zst",
               "--grad-head", "{retrained}", "--grad-repeats", "1", "--grad-batch", "2",
               "--prototypes", "{o}/p.mpk.zst"],
         inputs={"--grad-head": "retrained"},
         opts={"--grad-repeats": "pos", "--grad-batch": "pos", "--proto-bn": "enum"}),
    dict(name="aggregate", tool="aggregate",
         argv=["-m", "{model}", "-o", "{o}/m.mpk.zst", "{update}", B("update-01.mpk.zst")],
         inputs={"-m": "model", "UPDATE": "update"},
         opts={"--round": "nat", "--expect": "pos", "--timeout": "real", "--max-msg": "int"}),
    dict(name="aggregate-gradients", tool="aggregate",
         argv=["--gradients", "-o", "{o}/g.mpk.zst", "{grads}", B("grad-01.mpk.zst")],
         inputs={"GRADIENTS": "grads"}, opts={}),
    dict(name="aggregate-prototypes", tool="aggregate",
         argv=["--prototypes", "-o", "{o}/p.mpk.zst", "{proto}", B("proto-01.mpk.zst")],
         inputs={"PROTOTYPES": "proto"}, opts={}),
    dict(name="aggregate-heads", tool="aggregate",
         argv=["--heads", "-m", "{model}", "-o", "{o}/m.mpk.zst", "{head}", B("head-01.mpk.zst")],
         inputs={"-m": "model", "HEADS": "head"}, opts={}),
    dict(name="aggregate-init", tool="aggregate",
         argv=["--init", "resnet8", "--partition", "{partition}", "--width", "2", "-o", "{o}/m.mpk.zst"],
         inputs={"--partition": "partition"},
         opts={"--width": "pos", "--depth": "pos", "--proj": "nat", "--input-size": "pos",
               "--init": "enum"}),
    dict(name="aggregate-select", tool="aggregate",
         argv=["--select", "2", "--clients", "4", "--round", "1"],
         inputs={}, opts={"--select": "pos", "--clients": "pos"}),
    dict(name="featgen-creff", tool="featgen",
         argv=["--method", "creff", "-m", "{model}", "-g", "{grads}", "--features", "{feat-creff}",
               "--iters", "2", "--per-class", "3", "-o", "{o}/f.mpk.zst"],
         inputs={"-m": "model", "-g": "grads", "--features": "feat-creff"},
         opts={"--iters": "nat", "--per-class": "pos", "--lr": "real", "--round": "nat",
               "--method": "enum"}),
    dict(name="featgen-clip2fl", tool="featgen",
         argv=["--method", "clip2fl", "-m", "{model}", "-g", "{grads}", "-e", "{clip}",
               "--iters", "2", "--per-class", "3", "-o", "{o}/f.mpk.zst"],
         inputs={"-e": "clip"}, opts={"--beta": "real", "--tau": "realpos"}),
    dict(name="featgen-fedsm", tool="featgen",
         argv=["--method", "fedsm", "-m", "{model}", "-d", "{shard}", "-P", "{protos}", "-r", "{rel}",
               "--per-class", "3", "-o", "{o}/f.mpk.zst"],
         inputs={"-m": "model", "-d": "shard", "-P": "protos", "-r": "rel"},
         opts={"--temp": "real", "--select": "enum", "--proto-bn": "enum", "--client": "int"}),
    dict(name="retrain", tool="retrain",
         argv=["--features", "{feat-creff}", "-m", "{model}", "--epochs", "1", "--batch", "8",
               "-o", "{o}/r.mpk.zst"],
         inputs={"--features": "feat-creff", "-m": "model"},
         opts={"--epochs": "nat", "--batch": "pos", "--lr": "real", "--momentum": "real01",
               "--wd": "real", "--round": "nat", "--client": "int", "--num-samples": "pos"}),
    dict(name="retrain-update", tool="retrain",
         argv=["--features", "{feat-fedsm}", "-m", "{model}", "--epochs", "1", "--batch", "8",
               "--as-update", "-o", "{o}/r.mpk.zst"],
         inputs={"--features": "feat-fedsm"}, opts={}),
    dict(name="evaluate", tool="evaluate",
         argv=["-m", "{model}", "--test", "{test}", "-p", "{partition}", "--head", "{retrained}",
               "-o", "{o}/m.mpk.zst", "--csv", "{o}/m.csv", "--json", "{o}/m.json"],
         inputs={"-m": "model", "--test": "test", "-p": "partition", "--head": "retrained"},
         opts={"--batch": "pos"}),
    dict(name="clip-embed", tool="clip-embed",
         argv=["-w", ROOT + "/tests/fixtures/clip/tiny.safetensors", "--vocab", B("merges.txt.gz"),
               "-s", "{shard}", "-o", "{o}/c.mpk.zst"],
         inputs={"-s": "shard"}, opts={"--batch": "pos"}),
    dict(name="clip-embed-import", tool="clip-embed",
         argv=["--import", "{rel-text}", "--classes", B("classes.txt"), "-o", "{o}/c.mpk.zst"],
         inputs={"--import": "rel-text"}, opts={}),
    # the federation (issue 13): a server with no clients ends its round with exit 1 after
    # --wait; a client with no server exits 0 after --idle-exit
    dict(name="fl-server", tool="fl-server",
         argv=["--bind", "ipc://{o}/s.sock", "--insecure", "-m", "{model}", "--dir", "{o}/round",
               "--clients", "2", "--per-round", "1", "--wait", "1", "--deadline", "2"],
         inputs={"-m": "model"},
         opts={"--clients": "pos", "--per-round": "pos", "--min-clients": "pos", "--wait": "real",
               "--deadline": "real", "--dropout": "real", "--epochs": "nat", "--batch": "pos",
               "--lr": "real", "--max-msg": "int", "--aug": "enum"}),
    dict(name="fl-client", tool="fl-client",
         argv=["--server", "ipc://{o}/none.sock", "--insecure", "-d", "{shard}", "--work", "{o}/work",
               "--idle-exit", "1"],
         inputs={"-d": "shard"}, opts={"--heartbeat": "realpos", "--idle-exit": "real", "--max-msg": "int"}),
    dict(name="fl-keygen", tool="fl-keygen", argv=["-o", "{o}/k"], inputs={}, opts={}),
    dict(name="partition", tool="partition",
         argv=["--in", B("data"), "-o", "{o}/p", "--if", "2", "--clients", "2"],
         inputs={}, out_is_dir=True,
         opts={"--if": "real1", "--clients": "pos", "--alpha": "realpos", "--min-size": "nat",
               "--max-tries": "pos", "--classes-per-client": "pos", "--zstd-level": "pos",
               "--small-max": "pos", "--split": "enum", "--profile": "enum", "--store": "enum",
               "--format": "enum"}),
]

# option values that must be refused (exit 2) for each value class; EXTRA only for the first
# option of the class in each tool (the same parser reads them all: this keeps the matrix short)
BAD = {
    "pos": {"nonnum": "abc", "negative": "-1", "zero": "0", "overflow": HUGE, "fraction": "1.5"},
    "nat": {"nonnum": "abc", "negative": "-1", "overflow": HUGE, "fraction": "1.5"},
    "int": {"nonnum": "abc", "overflow": HUGE, "fraction": "1.5"},
    "real": {"nonnum": "abc", "negative": "-1", "nan": "nan", "overflow": "1e999"},
    "real01": {"negative": "-0.5", "above-1": "1.5", "nan": "nan"},
    "realpos": {"zero": "0", "negative": "-1", "nan": "nan"},
    "real1": {"below-1": "0.5", "nan": "nan"},
    "enum": {"unknown-word": "bogus", "empty": ""},
}
EXTRA = {
    "pos": {"trailing": "3x", "empty": ""}, "nat": {"empty": ""}, "int": {"empty": ""},
    "real": {"trailing": "0.1x", "inf": "inf", "empty": ""}, "real01": {"nonnum": "abc"},
    "realpos": {"nonnum": "abc"}, "real1": {"nonnum": "abc", "inf": "inf"}, "enum": {},
}


def fill(words, sub):
    out = []
    for w in words:
        for k, v in sub.items():
            w = w.replace("{" + k + "}", v)
        out.append(w)
    return out


def main():
    for d in (BASE, CORP, OUTS):
        shutil.rmtree(d, ignore_errors=True)
    make_base()
    os.makedirs(CORP)
    cases, seen, seen_out, seen_cls = [], set(), set(), set()

    def add(s, slot, case, argv, **extra):
        o = os.path.join(OUTS, str(len(cases)))
        words = fill(argv, dict({"o": o}, **{k: B(k) for k in SOURCES}))
        prog = extra.pop("pipeline", None) or os.path.join(BIN, s["tool"])
        cases.append(dict(scenario=s["name"], slot=slot, case=case, tool=s["tool"],
                          argv=[prog] + words, out=o, **extra))

    for s in SCENARIOS:
        # inputs: each slot's every damage, the other inputs valid
        for slot, src in s["inputs"].items():
            for case, path in corpus(src, s.get("generic_only", False)).items():
                add(s, "in:" + slot, case, [path if w == "{%s}" % src else w for w in s["argv"]])
            if slot.startswith("-") and not s.get("generic_only"):  # a ZeroMQ endpoint that cannot be
                add(s, "in:" + slot, "tcp-port-99999",
                    ["tcp://127.0.0.1:99999" if w == "{%s}" % src else w for w in s["argv"]])
        # options: each bad value of each option, appended to the valid command (the later
        # value wins, so an accepted bad value runs the command to the end)
        for opt, cls in s["opts"].items():
            vals = dict(BAD[cls])
            if (s["tool"], cls) not in seen_cls:
                seen_cls.add((s["tool"], cls))
                vals.update(EXTRA[cls])
            for case, v in vals.items():
                add(s, "opt:" + opt, case, s["argv"] + [opt, v])
        if s["tool"] not in seen:  # the options every tool shares: once a tool
            seen.add(s["tool"])
            add(s, "opt:--bogus", "unknown", s["argv"] + ["--bogus"])
            add(s, "opt:--seed", "missing-value", s["argv"] + ["--seed"])
            add(s, "opt:--seed", "nonnum", s["argv"] + ["--seed", "abc"])
            add(s, "opt:--seed", "negative", s["argv"] + ["--seed", "-1"])
            add(s, "opt:--seed", "overflow", s["argv"] + ["--seed", HUGE])
            add(s, "opt:--threads", "negative", s["argv"] + ["--threads", "-1"])
            add(s, "opt:--threads", "overflow", s["argv"] + ["--threads", HUGE])
            add(s, "opt:--threads", "nonnum", s["argv"] + ["--threads", "2x"])
        if "-o" in s["argv"] and s["tool"] not in seen_out:  # -o: once a tool
            seen_out.add(s["tool"])
            i = s["argv"].index("-o")

            def with_out(v):
                return s["argv"][:i + 1] + [v] + s["argv"][i + 2:]
            name = os.path.basename(s["argv"][i + 1])
            add(s, "opt:-o", "empty", with_out(""))
            add(s, "opt:-o", "missing-folder", with_out("{o}/no/such/folder/" + name))
            if s["name"] not in ("partition", "fl-keygen"):  # a folder, a name prefix
                add(s, "opt:-o", "directory", with_out("{o}"))
            if s["name"] not in ("partition", "inspect-tensor", "fl-keygen"):  # record endpoints
                add(s, "opt:-o", "tcp-port-99999", with_out("tcp://127.0.0.1:99999"))
                add(s, "opt:-o", "tcp-port-0", with_out("tcp://127.0.0.1:0"))
                add(s, "opt:-o", "tcp-no-port", with_out("tcp://127.0.0.1"))
                add(s, "opt:-o", "ipc-missing-folder", with_out("@ipc://{o}/no/such/sock"))
                # an existing device (or FIFO) is written in place, never renamed over
                add(s, "opt:-o", "char-device", with_out("{o}/null"), check="char-device")
    # the big batch: a batch larger than the data is the whole data, not a 12 GB buffer
    for s in SCENARIOS:
        if s["name"] in ("local-train", "evaluate", "retrain"):
            add(s, "opt:--batch", "one-million", s["argv"] + ["--batch", "1000000"])
    # aggregate: inputs that contribute no record, twice the same stdin, duplicates
    agg = next(s for s in SCENARIOS if s["name"] == "aggregate")
    add(agg, "in:UPDATE", "stdin-twice", ["-m", B("model"), "-o", "{o}/m.mpk.zst", "-", "-"],
        stdin=B("update"))
    add(agg, "in:UPDATE", "same-update-twice", ["-m", B("model"), "-o", "{o}/m.mpk.zst",
                                                 B("update"), B("update")])
    add(agg, "in:UPDATE", "no-update", ["-m", B("model"), "-o", "{o}/m.mpk.zst"])
    add(agg, "in:UPDATE", "tcp-port-99999", ["-m", B("model"), "-o", "{o}/m.mpk.zst",
                                             "--expect", "1", "--timeout", "1", "@tcp://127.0.0.1:99999"])
    add(agg, "in:UPDATE", "ipc-missing-folder", ["-m", B("model"), "-o", "{o}/m.mpk.zst",
                                                 "--expect", "1", "--timeout", "1", "@ipc://{o}/no/such/sock"])
    fs = next(s for s in SCENARIOS if s["name"] == "fl-server")
    for case, ep in (("tcp-port-99999", "tcp://*:99999"), ("empty", ""), ("tcp-no-port", "tcp://*"),
                     ("ipc-missing-folder", "ipc://{o}/no/such/sock")):
        add(fs, "opt:--bind", case, ["--bind", ep] + fs["argv"][2:])
    add(fs, "opt:--dir", "empty", fs["argv"] + ["--dir", ""])
    add(fs, "opt:--dir", "missing-folder", fs["argv"] + ["--dir", "{o}/no/such/round"])
    fc = next(s for s in SCENARIOS if s["name"] == "fl-client")
    for case, ep in (("tcp-port-99999", "tcp://127.0.0.1:99999"), ("empty", ""),
                     ("tcp-no-port", "tcp://127.0.0.1")):
        add(fc, "opt:--server", case, ["--server", ep] + fc["argv"][2:])
    add(fc, "opt:--work", "empty", fc["argv"] + ["--work", ""])
    kg = next(s for s in SCENARIOS if s["name"] == "fl-keygen")
    kdir = os.path.join(CORP, "keys")
    os.makedirs(kdir)
    for case, b in (("empty", b""), ("garbage", b"not a key\n"), ("truncated", b"#   ZeroMQ CURVE Secret Certificate\n")):
        with open(os.path.join(kdir, case + ".key"), "wb") as f:
            f.write(b)
        os.chmod(os.path.join(kdir, case + ".key"), 0o600)  # a secret key's mode: the content is tested
        add(kg, "in:--public", case, ["--public", os.path.join(kdir, case + ".key")])
    add(kg, "in:--public", "missing", ["--public", kdir + "/missing.key"])
    add(kg, "in:--public", "dir", ["--public", kdir])
    ins = next(s for s in SCENARIOS if s["name"] == "inspect")
    add(ins, "in:STREAM", "tcp-port-99999", ["tcp://127.0.0.1:99999"])
    add(ins, "in:STREAM", "tcp-port-0", ["tcp://127.0.0.1:0"])
    add(ins, "in:STREAM", "tcp-host-only", ["tcp://127.0.0.1"])
    add(ins, "in:STREAM", "stdin-empty", ["-"], stdin="/dev/null")
    text_cases(cases, add)
    pipeline_cases(add)
    with open(os.path.join(DIR, "cases.jsonl"), "w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    print("%d cases" % len(cases))


def text_cases(cases, add):
    """The non-record inputs: CLIP weights, config, vocabulary, class names, prompts,
    imported embeddings, and the datasets partition reads."""
    t = os.path.join(CORP, "text")
    os.makedirs(t)

    def w(name, b):
        p = os.path.join(t, name)
        with open(p, "wb") as f:
            f.write(b)
        return p
    ce = next(s for s in SCENARIOS if s["name"] == "clip-embed")
    ci = next(s for s in SCENARIOS if s["name"] == "clip-embed-import")
    tiny = ROOT + "/tests/fixtures/clip/tiny.safetensors"
    with open(tiny, "rb") as f:
        wb = f.read()
    hlen = struct.unpack("<Q", wb[:8])[0]
    flip = bytearray(wb)
    flip[8] ^= 0x55  # the header's opening brace
    weights = {"empty": w("empty.safetensors", b""),
               "trunc-header": w("t1.safetensors", wb[:6]),
               "trunc-json": w("t2.safetensors", wb[:8 + hlen // 2]),
               "trunc-data": w("t3.safetensors", wb[:len(wb) - 100]),
               "flip-header": w("flip.safetensors", bytes(flip)),
               "huge-header": w("huge.safetensors", struct.pack("<Q", 1 << 62) + wb[8:]),
               "missing": t + "/missing.safetensors", "dir": t, "devnull": "/dev/null"}
    for case, p in weights.items():
        d = os.path.join(t, "w-" + case)  # each beside a config.json, as the weights are
        os.makedirs(d)
        shutil.copy(os.path.dirname(tiny) + "/config.json", d)
        if case in ("missing", "dir", "devnull"):
            q = p
        else:
            q = os.path.join(d, "model.safetensors")
            shutil.copy(p, q)
        add(ce, "in:-w", case, [q if x == tiny else x for x in ce["argv"]])
    nocfg = os.path.join(t, "nocfg")
    os.makedirs(nocfg)
    shutil.copy(tiny, nocfg)
    add(ce, "in:-w", "no-config", [nocfg + "/tiny.safetensors" if x == tiny else x for x in ce["argv"]])
    add(ce, "in:--config", "missing", ce["argv"] + ["--config", t + "/missing.json"])
    add(ce, "in:--config", "not-json", ce["argv"] + ["--config", w("bad.json", b"{\"vision_config\": [")])
    add(ce, "in:--config", "dir", ce["argv"] + ["--config", t])
    vocab = {"not-gzip": w("v1.txt.gz", b"#version: test\n"),
             "trunc-gzip": w("v2.txt.gz", zlib_gzip(b"#version: test\n" + b"a b\n" * 1000)[:40]),
             "empty": w("v3.txt.gz", b""), "missing": t + "/missing.txt.gz", "dir": t}
    for case, p in vocab.items():
        add(ce, "in:--vocab", case, [p if x == B("merges.txt.gz") else x for x in ce["argv"]])
    classes = {"not-utf8": w("c1.txt", b"ring\nstr\xffipe\ncheck\nwave\ndots\nramp\ncross\nzigzag\nblob\ngrid\n"),
               "empty": w("c2.txt", b""), "nul": w("c3.txt", b"ring\x00x\n"),
               "missing": t + "/missing.txt", "dir": t}
    for case, p in classes.items():
        add(ce, "in:--classes", case, ce["argv"] + ["--classes", p])
    prompts = {"no-braces": w("p1.txt", b"a photo of a thing\n"), "empty": w("p2.txt", b""),
               "comments-only": w("p3.txt", b"# nothing\n"), "not-utf8": w("p4.txt", b"a \xff {}\n"),
               "missing": t + "/missing-p.txt"}
    for case, p in prompts.items():
        add(ce, "in:--prompts", case, ce["argv"] + ["--prompts", p])
    emb = np.random.default_rng(1).normal(size=(10, 5))
    buf = io.BytesIO()
    np.save(buf, emb.reshape(10, 5, 1).astype("<f4"))
    imp = {"npy-3d": w("e3.npy", buf.getvalue())}
    buf = io.BytesIO()
    np.save(buf, emb[:7].astype("<f4"))
    imp["npy-7-classes"] = w("e7.npy", buf.getvalue())
    buf = io.BytesIO()
    e = emb.astype("<f4")
    e[2, 3] = np.nan
    np.save(buf, e)
    imp["npy-nan"] = w("enan.npy", buf.getvalue())
    imp["npy-trunc"] = w("etr.npy", buf.getvalue()[:100])
    imp["npy-text"] = w("etxt.npy", b"not a numpy file\n")
    for case, p in imp.items():
        add(ci, "in:--import", case, [p if x == "{rel-text}" else x for x in ci["argv"]])
    add(ci, "in:--classes", "fewer-classes", [w("c7.txt", b"a\nb\nc\n") if x == B("classes.txt") else x
                                              for x in ci["argv"]])
    # partition's datasets: a damaged CIFAR-10 folder, an image folder, a list file
    pa = next(s for s in SCENARIOS if s["name"] == "partition")
    data = B("data")

    def cifar(case, edit):
        d = os.path.join(t, "cifar-" + case)
        shutil.copytree(data, d)
        edit(d)
        add(pa, "in:--in", case, [d if x == data else x for x in pa["argv"]])

    def cut(d):
        p = d + "/data_batch_1.bin"
        n = os.path.getsize(p)
        os.truncate(p, n - 1000)

    def bad_label(d):
        with open(d + "/data_batch_1.bin", "r+b") as f:
            f.write(b"\x0b")

    cifar("cifar-trunc", cut)
    cifar("cifar-label-11", bad_label)
    cifar("cifar-no-meta", lambda d: os.remove(d + "/batches.meta.txt"))
    cifar("cifar-empty-batch", lambda d: os.truncate(d + "/data_batch_2.bin", 0))
    empty = os.path.join(t, "empty-folder")
    os.makedirs(empty)
    for case, p in {"missing": t + "/missing-data", "empty-folder": empty, "devnull": "/dev/null",
                    "a-record": B("model")}.items():
        add(pa, "in:--in", case, [p if x == data else x for x in pa["argv"]])
    # an image folder holding a file that is not an image, and a JPEG that declares
    # 60000 x 60000 pixels (a decompression bomb's header)
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        for case in ("not-an-image", "jpeg-huge", "png-trunc"):
            d = os.path.join(t, "folder-" + case)
            for c in ("a", "b"):
                os.makedirs(os.path.join(d, "train", c))
                for i in range(6):
                    Image.new("RGB", (8, 8), (40 * i, 100, 30)).save(os.path.join(d, "train", c, "%d.png" % i))
            bad = os.path.join(d, "train", "a", "bad")
            if case == "not-an-image":
                with open(bad + ".jpg", "wb") as f:
                    f.write(b"this is text, not a JPEG\n")
            elif case == "jpeg-huge":
                b = io.BytesIO()
                Image.new("RGB", (16, 16), (1, 2, 3)).save(b, "JPEG")
                j = bytearray(b.getvalue())
                k = j.index(b"\xff\xc0")  # SOF0: length, precision, height, width
                j[k + 5:k + 9] = struct.pack(">HH", 60000, 60000)
                with open(bad + ".jpg", "wb") as f:
                    f.write(bytes(j))
            else:
                b = io.BytesIO()
                Image.new("RGB", (8, 8), (1, 2, 3)).save(b, "PNG")
                with open(bad + ".png", "wb") as f:
                    f.write(b.getvalue()[:30])
            add(pa, "in:--in", case, [d if x == data else x for x in pa["argv"]] + ["--format", "folder"])
    lst = os.path.join(t, "list")
    os.makedirs(lst)
    for case, text in {"list-bad-label": b"a.png x\n", "list-negative-label": b"a.png -3\n",
                       "list-missing-image": b"nothing.png 0\nnothing2.png 1\n",
                       "list-empty": b""}.items():
        p = os.path.join(lst, case + ".txt")
        with open(p, "wb") as f:
            f.write(text)
        add(pa, "in:--in", case, [p if x == data else x for x in pa["argv"]] + ["--format", "list"])


# the pipelines: every option is checked before any work (exit 2, one line, no run folder).
# The command around each bad value is a tiny run on an empty dataset folder: a bad value the
# pipeline lets through reaches partition, whose own error line (and the run folder it leaves)
# the matrix reports at once, where a real run would take minutes
PIPE_BASE = ["--data", "{data}", "--if", "2", "--clients", "2", "--per-round", "1", "--rounds", "1",
             "--epochs", "1", "--batch", "8", "--width", "2", "--run", "{o}/run", "-q"]
PIPE_COMMON = [
    ("--bogus", None, "unknown"), ("--rounds", "abc", "nonnum"), ("--rounds", "0", "zero"),
    ("--rounds", "-1", "negative"), ("--clients", HUGE, "overflow"), ("--jobs", "1.5", "fraction"),
    ("--lr", "-1", "negative"), ("--lr", "0.1x", "trailing"), ("--momentum", "2", "above-1"),
    ("--if", "0.5", "below-1"), ("--split", "bogus", "unknown-word"), ("--arch", "bogus", "unknown-word"),
    ("--run", "", "empty"), ("--data", "{o}/missing", "missing"), ("--rounds", None, "missing-value"),
]
PIPELINES = {
    "fedavg": ([], []),
    "creff": (["--match-iters", "1", "--features-per-class", "2", "--grad-repeats", "1",
               "--grad-batch", "2", "--head-epochs", "1"],
              [("--match-iters", "abc", "nonnum"), ("--features-per-class", "0", "zero"),
               ("--head-lr", "x", "nonnum"), ("--grad-batch", "1.5", "fraction"),
               ("--body", "{o}/missing", "missing")]),
    "clip2fl": (["--clip", "{clip}", "--proj", "24", "--match-iters", "1", "--features-per-class", "2",
                 "--grad-repeats", "1", "--grad-batch", "2", "--head-epochs", "1"],
                [("--beta", "abc", "nonnum"), ("--tau", "0", "zero"), ("--kd-temp", "x", "nonnum"),
                 ("--kd-alpha", "-1", "negative"), ("--clip", "{o}/missing", "missing")]),
    "fedsm": (["--relevance", "{rel}", "--per-class", "2", "--head-epochs", "1", "--retrain-rounds", "1"],
              [("--select", "bogus", "unknown-word"), ("--temp", "abc", "nonnum"),
               ("--per-class", "0", "zero"), ("--retrain-rounds", "-1", "negative"),
               ("--head-batch", "0", "zero"), ("--proto-bn", "x", "unknown-word"),
               ("--relevance", "{o}/missing", "missing")]),
}


# a pipeline checks its options before any work; its run on an empty dataset fails at once
QUICK = dict(timeout=60, timeout_why=": the bad option was not refused before the work")


def pipeline_cases(add):
    data = os.path.join(CORP, "text", "empty-folder")  # made by text_cases
    for name, (own, bad) in PIPELINES.items():
        s = dict(name=name, tool=name)
        base = [w.replace("{data}", data) for w in PIPE_BASE] + own
        common = PIPE_COMMON if name == "fedavg" else [c for c in PIPE_COMMON if c[2] in (
            "unknown", "nonnum", "zero", "missing")]  # the rest: common.sh's parser, as fedavg's
        for opt, v, case in common + bad:
            args = [opt] if v is None else [opt, v]
            if opt == "--data":
                base2 = [w for w in base]
                base2[base2.index("--data") + 1] = v
                argv = base2
            else:
                argv = base + args
            add(s, "opt:" + opt, case, argv, pipeline=ROOT + "/pipelines/%s.sh" % name, **QUICK)
    s = dict(name="compare", tool="compare")
    base = ["--data", data, "--prefix", "{o}/cmp", "--if", "2", "--clients", "2", "--per-round", "1",
            "--rounds", "1", "--epochs", "1", "--batch", "8", "--width", "2", "-q"]
    for opt, v, case in [("--methods", "fedavg bogus", "unknown-word"), ("--prefix", "", "empty"),
                         ("--retrain-rounds", "abc", "nonnum"), ("--bogus", None, "unknown")]:
        add(s, "opt:" + opt, case, base + ([opt] if v is None else [opt, v]),
            pipeline=ROOT + "/pipelines/compare.sh", **QUICK)


if __name__ == "__main__":
    main()

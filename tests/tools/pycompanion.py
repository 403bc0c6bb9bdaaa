#!/usr/bin/python3
"""pycompanion.py - the checks of tests/tools/python.sh: python/fedsm.py against the C tools.

  pycompanion.py records T      read_records / write_records against the C codec (rec-gen,
                                rec-check, inspect) and the corrupt-input matrix
  pycompanion.py kinds T        write_record of every kind a tool reads -> that tool reads it
  pycompanion.py torch T        load_model / save_model against evaluate, local-train,
                                aggregate and inspect, every architecture (needs torch)
  pycompanion.py median T R     the model of R's round 1 (fedavg.sh --aggregate-cmd
                                median_aggregate.py) against numpy's median of its updates

T is the test's scratch folder, holding p/ (partition of gen-demo data), m0.mpk.zst (a
resnet8 width-4 init) and, for `torch`, u0.mpk.zst (a local-train update) with its
evaluate metrics met-u0.mpk.zst.  Tools come from $FEDSM_BIN; fedsm from $PYTHONPATH.
Independent references: tests/tools/gen.py's formulas (and its stock msgpack/zstandard
decoder), tests/tools/rec.py's decoder, numpy formulas, and the tools' own outputs.
"""
import glob
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import fedsm  # noqa: E402
import gen  # noqa: E402  (the record tests' formulas)
import rec as stock  # noqa: E402  (read with stock msgpack + zstandard, no fedsm code)

BIN = os.environ.get("FEDSM_BIN", "")  # the tools (tests/tools/python.sh sets it)
HELPERS = os.path.join(os.path.dirname(BIN), "helpers")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)
    return cond


def tool(*args, rc=0, what=None):
    """Runs a tool; checks its exit code; returns its stderr."""
    p = subprocess.run([os.path.join(BIN, args[0])] + [str(a) for a in args[1:]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check(p.returncode == rc, "%s: exit %d, expected %d: %s" % (what or " ".join(map(str, args)), p.returncode, rc,
                                                                  p.stderr.strip()[-600:]))
    return p.stdout + p.stderr


def raises(exc, f, *a, **kw):
    try:
        f(*a, **kw)
    except exc as e:
        return str(e)
    return None


# ---- records ----
def records(T):
    # C -> python: a multi-record stream of every dtype and meta type (gen.py's formulas)
    c = os.path.join(T, "c.mpk.zst")
    subprocess.run([os.path.join(HELPERS, "rec-gen"), "--records", "4", "--client", "3", c], check=True)
    rs = fedsm.read_records(c)
    check(len(rs) == 4, "read_records of a 4-record C stream gave %d" % len(rs))
    for q, r in enumerate(rs):
        check(r.kind == "update" and gen.same(r.meta, gen.expected_meta(3, q)), "record %d meta %r" % (q, r.meta))
        exp = gen.expected(3, q)
        check(list(r.tensors) == list(exp), "record %d tensor order %s" % (q, list(r.tensors)))
        for k, want in exp.items():
            got = r.tensors[k]
            check(got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want),
                  "record %d tensor %s: %s %s" % (q, k, got.dtype, got.shape))
    ends = fedsm.read_records(c, with_end=True)
    check([r.kind for r in ends][-1] == "end" and ends[-1].meta["count"] == 4, "with_end")
    # python -> C: write_records with the formulas; C's rec-check checks every value
    p = os.path.join(T, "py.mpk.zst")
    fedsm.write_records(p, [("update", gen.expected_meta(0, q), gen.expected(0, q)) for q in range(3)])
    r = subprocess.run([os.path.join(HELPERS, "rec-check"), "--records", "3", p], capture_output=True, text=True)
    check(r.returncode == 0, "rec-check of write_records' stream: %s" % r.stderr.strip())
    check(not glob.glob(p + ".tmp.*"), "temporary left by write_records")
    # every frame carries its content size and a checksum; the last is end with count 3
    raw = gen.read_records(open(p, "rb").read())
    check(raw[-1] == {"fedsm": 1, "kind": "end", "meta": {"count": 3}, "tensors": {}}, "end record %r" % raw[-1])
    # concatenated streams, skippable frames, a stream without end record
    both = os.path.join(T, "cat.mpk.zst")
    skip = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    open(both, "wb").write(open(c, "rb").read() + skip + open(p, "rb").read() + skip)
    check(len(fedsm.read_records(both)) == 7, "cat of two streams")
    check(len(fedsm.read_records(both, with_end=True)) == 9, "cat with ends")
    noend = os.path.join(T, "noend.mpk.zst")
    gen.write(noend, 2, False, False, False)
    check(len(fedsm.read_records(noend)) == 2, "stream without end record")
    check(len(fedsm.read_records(open(c, "rb").read())) == 4, "read_records of bytes")
    # the corrupt-input matrix: every case is a FormatError naming the stream (never another
    # exception, never accepted), as every C reader refuses them (records_corrupt.sh)
    d = os.path.join(T, "cm")
    gen.corrupt(d)
    cases = sorted(glob.glob(os.path.join(d, "*.mpk.zst")))
    check(len(cases) >= 50, "only %d corrupt cases" % len(cases))
    for f in cases:
        try:
            fedsm.read_records(f)
            check(False, "corrupt case %s accepted" % os.path.basename(f))
        except fedsm.FormatError as e:
            check(f in str(e), "%s: message does not name the stream: %s" % (os.path.basename(f), e))
        except Exception as e:  # noqa: BLE001
            check(False, "corrupt case %s: %s %s" % (os.path.basename(f), type(e).__name__, e))
    for name, want in (("end_count_mismatch", "incomplete"), ("end_count_over", "more records than it declares")):
        msg = raises(fedsm.FormatError, fedsm.read_records, os.path.join(d, name + ".mpk.zst"))
        check(msg and want in msg, "%s: %s" % (name, msg))
    # refused writes leave nothing behind
    bad = os.path.join(T, "bad.mpk.zst")
    check(raises(TypeError, fedsm.write_record, bad, "model", {}, {"w": np.zeros(3)}) is not None, "float64 tensor accepted")
    check(raises(TypeError, fedsm.write_record, bad, "model", {"x": object()}, {}) is not None, "object meta accepted")
    check(raises(ValueError, fedsm.write_record, bad, "end", {}, {}) is not None, "kind end accepted")
    check(not glob.glob(bad + "*"), "a refused write left %s" % glob.glob(bad + "*"))
    # a scalar stays a scalar, numpy meta values become plain ones; the C tools read them
    s = os.path.join(T, "scalar.mpk.zst")
    fedsm.write_record(s, "update", {"n": np.int64(3), "v": np.float32(0.5), "l": (1, 2)},
                       {"s": np.int64(7), "h": np.arange(4, dtype=np.float16)})
    r = stock.recs(s)[0]
    check(r["tensors"]["s"]["shape"] == [] and r["meta"] == {"n": 3, "v": 0.5, "l": [1, 2]}, "scalar/meta %r" % r)
    out = tool("inspect", "--json", s)
    check('"shape":[]' in out and '"dtype":"<f2"' in out, "inspect of a python scalar: %s" % out[:300])


# ---- every kind a tool reads ----
def kinds(T):
    P = os.path.join(T, "p")
    m0p = os.path.join(T, "m0.mpk.zst")
    m0 = fedsm.read_record(m0p, "model")
    C, D = m0.meta["num_classes"], m0.meta["feat_dim"]
    classes = m0.meta["classes"]
    g = np.random.default_rng(11)

    def out(name):
        return os.path.join(T, "k-" + name)

    def rewrite(src, dst):
        fedsm.write_records(dst, fedsm.read_records(src))
        return dst

    # model, shard, partition: a read-and-rewrite gives the tools the very same results
    base = tool("evaluate", "-m", m0p, "--test", P + "/test.mpk.zst", "-p", P + "/partition.mpk.zst", "--csv", out("a.csv"))
    tool("evaluate", "-m", rewrite(m0p, out("m0.mpk.zst")), "--test", rewrite(P + "/test.mpk.zst", out("test.mpk.zst")),
         "-p", rewrite(P + "/partition.mpk.zst", out("part.mpk.zst")), "--csv", out("b.csv"))
    check(open(out("a.csv")).read() == open(out("b.csv")).read(), "rewritten model/shard/partition evaluate differently")
    del base
    # a shard made from numpy arrays (not a copy): evaluate and local-train read it
    n = 24
    imgs = g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = (np.arange(n) % C).astype(np.int32)
    smeta = {"classes": classes, "client": 0, "mean": m0.meta["mean"], "std": m0.meta["std"], "dataset": "numpy"}
    fedsm.write_record(out("shard.mpk.zst"), "shard", smeta,
                       {"images": imgs, "labels": labels, "index": np.arange(n, dtype=np.int64)})
    tool("evaluate", "-m", m0p, "--test", out("shard.mpk.zst"), "--csv", out("s.csv"))
    rows = open(out("s.csv")).read().splitlines()
    check(rows[-1].endswith(",%d" % n), "evaluate of the numpy shard: %s" % rows)
    tool("local-train", "-m", m0p, "-d", out("shard.mpk.zst"), "--epochs", 1, "-o", out("u-py.mpk.zst"))
    # a teacher for that shard (client 0, by sample index): local-train --teacher reads it
    fedsm.write_record(out("teacher.mpk.zst"), "teacher", {"client": 0, "classes": classes},
                       {"embeddings": g.normal(size=(n, 6)).astype(np.float32),
                        "logits": g.normal(size=(n, C)).astype(np.float32), "index": np.arange(n, dtype=np.int64)})
    tool("local-train", "-m", m0p, "-d", out("shard.mpk.zst"), "--epochs", 1, "--teacher", out("teacher.mpk.zst"),
         "-o", out("u-kd.mpk.zst"))
    # update: two rewritten updates (local-train --epochs 0: the model as received, with the
    # client's sample count) aggregate to the same model as the originals
    ups = [out("u-c%d.mpk.zst" % k) for k in (0, 1)]
    for k, u in enumerate(ups):
        tool("local-train", "-m", m0p, "-d", "%s/client-%02d.mpk.zst" % (P, k), "--epochs", 0, "-o", u)
    tool("aggregate", "-m", m0p, "-o", out("agg-a.mpk.zst"), *ups)
    tool("aggregate", "-m", m0p, "-o", out("agg-b.mpk.zst"), *[rewrite(u, u + ".py") for u in ups])
    a, b = stock.tensors(out("agg-a.mpk.zst")), stock.tensors(out("agg-b.mpk.zst"))
    check(a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), "aggregate of rewritten updates differs")
    # features -> retrain
    N = 5 * C
    fedsm.write_record(out("feat.mpk.zst"), "features",
                       {"round": 0, "method": "creff", "client": -1, "num_classes": C, "feat_dim": D, "classes": classes},
                       {"features": g.normal(size=(N, D)).astype(np.float32),
                        "labels": (np.arange(N) % C).astype(np.int32)})
    tool("retrain", "--features", out("feat.mpk.zst"), "-m", m0p, "--epochs", 2, "-o", out("retrained.mpk.zst"))
    # prototypes -> aggregate --prototypes (against numpy's count-weighted mean) and featgen -P
    protos = []
    for k in (0, 1):
        mu = g.normal(size=(C, D)).astype(np.float32)
        mu /= np.linalg.norm(mu, axis=1, keepdims=True)
        cnt = g.integers(0, 9, C).astype(np.int64)
        mu[cnt == 0] = 0
        protos.append((mu, cnt))
        fedsm.write_record(out("proto-%d.mpk.zst" % k), "prototypes",
                           {"round": 1, "client": k, "num_classes": C, "feat_dim": D, "bn": "eval",
                            "num_samples": int(cnt.sum())}, {"means": mu, "counts": cnt})
    tool("aggregate", "--prototypes", "-o", out("protos.mpk.zst"), out("proto-0.mpk.zst"), out("proto-1.mpk.zst"))
    got = stock.tensors(out("protos.mpk.zst"))
    num = sum(c[:, None].astype(np.float64) * m for m, c in protos)
    den = sum(c for _, c in protos).astype(np.float64)
    want = np.where(den[:, None] > 0, num / np.maximum(den, 1)[:, None], 0)
    check(np.abs(got["means"] - want).max() < 1e-6 and np.array_equal(got["counts"], den.astype(np.int64)),
          "aggregate --prototypes of python records: %g" % np.abs(got["means"] - want).max())
    fedsm.write_record(out("protos-py.mpk.zst"), "prototypes",
                       {"round": 0, "client": -1, "num_classes": C, "feat_dim": D, "bn": "eval", "clients": [0, 1]},
                       {"means": want.astype(np.float32), "counts": den.astype(np.int64)})
    # class embeddings: a record with `text` -> clip-embed --import; an embeddings record
    # with relevance -> featgen --method fedsm -r
    names = out("classes.txt")
    open(names, "w").write("".join(c + "\n" for c in classes))
    fedsm.write_record(out("text.mpk.zst"), "embeddings", {"classes": classes},
                       {"text": g.normal(size=(C, 6)).astype(np.float32)})
    tool("clip-embed", "--import", out("text.mpk.zst"), "--classes", names, "-o", out("rel-c.mpk.zst"), "-q")
    S = g.uniform(0, 1, (C, C)).astype(np.float32)
    fedsm.write_record(out("rel.mpk.zst"), "embeddings", {"classes": classes}, {"relevance": (S + S.T) / 2})
    for rel in (out("rel-c.mpk.zst"), out("rel.mpk.zst")):
        tool("featgen", "--method", "fedsm", "-m", m0p, "-d", P + "/client-00.mpk.zst", "-P", out("protos-py.mpk.zst"),
             "-r", rel, "--per-class", 3, "-o", out("pseudo.mpk.zst"), what="featgen -P/-r " + os.path.basename(rel))
    # gradients -> aggregate --gradients (uniform mean over the clients holding a class) and featgen -g
    grads = []
    for k, held in ((0, [0, 2, 5]), (1, [2, 3])):
        w = g.normal(size=(len(held), C, D)).astype(np.float32)
        bb = g.normal(size=(len(held), C)).astype(np.float32)
        grads.append(dict(zip(held, zip(w, bb))))
        fedsm.write_record(out("grad-%d.mpk.zst" % k), "gradients",
                           {"round": 1, "client": k, "num_classes": C, "feat_dim": D, "repeats": 1, "batch": 4,
                            "classes": classes},
                           {"classes": np.array(held, np.int32), "weight": w, "bias": bb,
                            "counts": np.full(len(held), 4, np.int32)})
    tool("aggregate", "--gradients", "-o", out("grads.mpk.zst"), out("grad-0.mpk.zst"), out("grad-1.mpk.zst"))
    got = stock.tensors(out("grads.mpk.zst"))
    check(list(got["classes"]) == [0, 2, 3, 5], "aggregated gradient classes %s" % got["classes"])
    for i, c in enumerate(got["classes"]):
        have = [gr[c] for gr in grads if c in gr]
        ww = np.mean([h[0].astype(np.float64) for h in have], axis=0)
        check(np.abs(got["weight"][i] - ww).max() < 1e-6 and got["counts"][i] == len(have),
              "aggregate --gradients class %d" % c)
    tool("featgen", "--method", "creff", "-m", m0p, "-g", out("grad-0.mpk.zst"), "--iters", 2, "--per-class", 3,
         "-o", out("ff.mpk.zst"))


# ---- torch ----
def confusion(pred, labels, C):
    m = np.zeros((C, C), np.int64)
    np.add.at(m, (labels, pred), 1)
    return m


def same_as_evaluate(net, metrics_path, test, what, size=None):
    """net's top-1, confusion and mean cross-entropy on the test shard against evaluate's
    metrics record (logits differ by float rounding: mean cross-entropy within 1e-4 relative, the
    tolerance of the README's PyTorch table; measured: 1e-7 for the ResNet-8s, 6e-6 for
    the random ResNet-50)."""
    import torch
    met = fedsm.read_record(metrics_path, "metrics")
    imgs, labels = fedsm.shard_arrays(test, size)
    lg = fedsm.predict(net, imgs, net.fedsm_meta["mean"], net.fedsm_meta["std"])
    pred = lg.argmax(1)
    top1 = float((pred == labels).mean())
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(lg).double(), torch.from_numpy(labels)).item()
    s = np.sort(lg, 1)
    margin = float((s[:, -1] - s[:, -2]).min())
    check(abs(top1 - met.meta["top1"]) < 1e-12, "%s: top-1 %.4f in PyTorch, %.4f in evaluate (smallest margin %.2g)"
          % (what, top1, met.meta["top1"], margin))
    check(np.array_equal(confusion(pred, labels, lg.shape[1]), met.tensors["confusion"]), "%s: confusion differs" % what)
    check(abs(loss - met.meta["loss"]) <= 1e-4 * abs(loss), "%s: loss %.8f vs evaluate %.8f" % (what, loss, met.meta["loss"]))
    print("%s: top-1 %.4f / evaluate %.4f, %d classes predicted, loss %.7f / evaluate %.7f, smallest top-2 "
          "margin %.2g" % (what, top1, met.meta["top1"], len(set(pred.tolist())), loss, met.meta["loss"], margin))
    return top1


def randomise(net, seed, x=None):
    """Every parameter and BN buffer to a seeded random value; with x (normalised images),
    the BN running statistics are then those of x (one train-mode pass, cumulative), so that
    the network's predictions vary from image to image.  Either way they are far from the
    init's 0/1, and a buffer lost on the way changes the outputs."""
    import torch
    gen_ = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                v.fill_(seed)
            elif k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=gen_) + 0.5)
            elif k.endswith("running_mean"):
                v.copy_(torch.randn(v.shape, generator=gen_) * 0.2)
            elif v.dim() == 4:
                v.copy_(torch.randn(v.shape, generator=gen_) * (2.0 / (v.shape[1] * v.shape[2] * v.shape[3])) ** 0.5)
            elif k.endswith("weight") and v.dim() == 1:
                v.copy_(1 + 0.2 * torch.randn(v.shape, generator=gen_))
            elif v.dim() == 2:  # proj, fc: large enough to spread the predictions
                v.copy_(torch.randn(v.shape, generator=gen_) * 2 / v.shape[1] ** 0.5)
            elif k in ("fc.bias", "proj.bias"):
                v.copy_(torch.randn(v.shape, generator=gen_) * 0.05)
            else:
                v.copy_(torch.randn(v.shape, generator=gen_) * 0.3)
        if x is not None:
            bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the pass
            net.train()
            net(torch.from_numpy(x))
            for m in bns:
                m.momentum = 0.1
                m.num_batches_tracked.fill_(seed)
            # the classifier on standardised features, so the predictions spread over classes
            net.eval()
            f = net.features(torch.from_numpy(x))
            w = torch.randn(net.fc.weight.shape, generator=gen_) / (f.std(0) + 1e-3)
            net.fc.weight.copy_(w)
            net.fc.bias.copy_(-(w @ f.mean(0)))
    net.eval()


def torch_checks(T):
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    P = os.path.join(T, "p")
    test = P + "/test.mpk.zst"
    m0p, u0p = os.path.join(T, "m0.mpk.zst"), os.path.join(T, "u0.mpk.zst")
    # a model trained by local-train: the same top-1 in PyTorch as in evaluate
    net, classes = fedsm.load_model(u0p)
    check(classes == fedsm.read_record(m0p).meta["classes"], "load_model's class names %s" % classes)
    check(not net.training and isinstance(net, torch.nn.Module), "load_model: not an eval-mode module")
    top1 = same_as_evaluate(net, os.path.join(T, "met-u0.mpk.zst"), test, "local-train update")
    check(top1 >= 0.3, "the trained model's top-1 %.2f: too little learnt for the comparison to mean much" % top1)
    # every architecture built in PyTorch -> save_model -> evaluate: the same results
    m0 = fedsm.read_record(m0p)
    norm = {"mean": m0.meta["mean"], "std": m0.meta["std"], "classes": m0.meta["classes"]}
    imgs, _ = fedsm.shard_arrays(test)
    x = fedsm.normalize(imgs, m0.meta["mean"], m0.meta["std"])
    archs = [("resnet8 w4", fedsm.CifarResNet(num_classes=10, depth=8, width=4)),
             ("cifar-resnet d14 w2 proj 6", fedsm.CifarResNet(num_classes=10, depth=14, width=2, proj_dim=6,
                                                              arch="cifar-resnet")),
             ("resnet50 w2 32px proj 5", fedsm.ResNet50(num_classes=10, width=2, proj_dim=5, input_size=32))]
    for i, (name, net) in enumerate(archs):
        randomise(net, 20 + i, x)
        path = os.path.join(T, "py-%d.mpk.zst" % i)
        fedsm.save_model(net, path, meta=norm)
        tool("inspect", path)
        tool("evaluate", "-m", path, "--test", test, "-o", os.path.join(T, "met-py-%d.mpk.zst" % i), "--threads", 1)
        back, _ = fedsm.load_model(path)
        sd, sb = net.state_dict(), back.state_dict()
        check(sd.keys() == sb.keys() and all(torch.equal(sd[k], sb[k]) for k in sd), "%s: round trip differs" % name)
        back.fedsm_meta = dict(norm)
        net.eval()
        net.fedsm_meta = dict(norm)
        same_as_evaluate(net, os.path.join(T, "met-py-%d.mpk.zst" % i), test, "saved " + name)
    # an encoded (JPEG/PNG) test shard: shard_arrays(size=) gives evaluate's eval transform
    # (odd sizes, one whose shorter side is already the resize of 37, greyscale and RGBA)
    from PIL import Image
    enc = os.path.join(T, "enc")
    rs = np.random.RandomState(4)
    sizes = [(40, 31), (33, 57), (64, 48), (37, 50), (50, 37), (45, 60), (31, 40), (70, 35)]
    for split in ("train", "test"):
        for c, cname in enumerate(["cat", "dog", "eel"]):
            os.makedirs(os.path.join(enc, split, cname))
            for i in range(4):
                w, h = sizes[(i + 3 * c) % len(sizes)]
                yy, xx = np.mgrid[0:h, 0:w]
                a = np.stack([(xx * (3 + c) + yy) % 256, (yy * 5 + 40 * c) % 256, np.full_like(xx, 60 * c + 20)], -1)
                im = Image.fromarray(np.clip(a + rs.randint(0, 60, a.shape), 0, 255).astype(np.uint8), "RGB")
                f = os.path.join(enc, split, cname, str(i))
                {1: lambda: im.convert("L").save(f + ".png"), 3: lambda: im.convert("RGBA").save(f + ".png")}.get(
                    i, lambda: im.save(f + ".jpg", quality=85))()
    tool("partition", "--in", enc, "-o", enc + "/p", "--store", "encoded", "--if", 1, "--split", "iid", "--clients", 1,
         "-q")
    part = fedsm.read_record(enc + "/p/partition.mpk.zst")
    etest = enc + "/p/test.mpk.zst"
    check("jpeg" in fedsm.read_record(etest).tensors, "the encoded partition's test shard holds no jpeg")
    imgs, _ = fedsm.shard_arrays(etest, size=32)
    net = fedsm.CifarResNet(num_classes=3, depth=8, width=4)
    enorm = {"mean": part.meta["mean"], "std": part.meta["std"], "classes": part.meta["classes"]}
    randomise(net, 9, fedsm.normalize(imgs, enorm["mean"], enorm["std"]))
    path = os.path.join(T, "py-enc.mpk.zst")
    fedsm.save_model(net, path, meta=enorm)
    tool("evaluate", "-m", path, "--test", etest, "-o", os.path.join(T, "met-enc.mpk.zst"), "--threads", 1)
    net.fedsm_meta = enorm
    same_as_evaluate(net, os.path.join(T, "met-enc.mpk.zst"), etest, "encoded shard, resnet8 w4", size=32)
    # save_model(like=) of a module of m0's architecture: local-train -m, aggregate -m and
    # (as an update) aggregate take it; the meta is m0's with the producer replaced
    net = fedsm.CifarResNet(num_classes=10, depth=8, width=4)
    randomise(net, 5)
    like = os.path.join(T, "like.mpk.zst")
    fedsm.save_model(net, like, like=m0p)
    lm = fedsm.read_record(like)
    check(lm.meta["classes"] == m0.meta["classes"] and lm.meta["round"] == m0.meta["round"]
          and lm.meta["producer"] == fedsm.PRODUCER and "inputs" not in lm.meta, "like= meta %r" % lm.meta)
    u = os.path.join(T, "like-u.mpk.zst")
    tool("local-train", "-m", like, "-d", P + "/client-01.mpk.zst", "--epochs", 1, "-o", u)
    tool("aggregate", "-m", like, "-o", os.path.join(T, "like-agg.mpk.zst"), u)
    pu = os.path.join(T, "py-update.mpk.zst")
    fedsm.save_model(net, pu, like=m0p, kind="update", meta={"client": 3, "round": 1, "num_samples": 30})
    tool("aggregate", "-m", m0p, "-o", os.path.join(T, "mixed.mpk.zst"), u0p, pu)
    n0 = fedsm.read_record(u0p).meta["num_samples"]
    a0, got = stock.tensors(u0p), stock.tensors(os.path.join(T, "mixed.mpk.zst"))
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    k = "fc.weight"
    want = (n0 * a0[k].astype(np.float64) + 30 * sd[k]) / (n0 + 30)
    check(np.abs(got[k] - want).max() < 1e-6, "aggregate of a C and a python update: %g" % np.abs(got[k] - want).max())
    # refusals: another architecture for like=, an update without its meta, a record that
    # is not a model
    other = fedsm.CifarResNet(num_classes=10, depth=8, width=8)
    check(raises(ValueError, fedsm.save_model, other, os.path.join(T, "x.mpk.zst"), like=m0p) is not None,
          "save_model(like=) of another width accepted")
    check(raises(ValueError, fedsm.save_model, net, os.path.join(T, "x.mpk.zst"), kind="update") is not None,
          "an update without client/round/num_samples accepted")
    check(raises(fedsm.FormatError, fedsm.load_model, test) is not None, "load_model of a shard accepted")
    check(not os.path.exists(os.path.join(T, "x.mpk.zst")), "a refused save left a file")


# ---- the median plug-in ----
def median(T, run, kept):
    r1 = os.path.join(run, "round-001")
    m = stock.recs(os.path.join(r1, "model.mpk.zst"))
    check(len(m) == 1 and m[0]["kind"] == "model", "round 1: %d records" % len(m))
    meta, got = m[0]["meta"], {k: stock.arr(v) for k, v in m[0]["tensors"].items()}
    ups = sorted(glob.glob(os.path.join(kept, "round-001-update-*.mpk.zst")))
    check(len(ups) == 3, "kept round-1 updates: %s" % ups)
    ur = [stock.recs(u)[0] for u in ups]
    prev = stock.recs(os.path.join(run, "round-000", "model.mpk.zst"))[0]
    check(meta["round"] == 1 and meta["aggregation"] == "median" and meta["clients"] == sorted(r["meta"]["client"] for r in ur)
          and meta["num_samples"] == sum(r["meta"]["num_samples"] for r in ur) and meta["classes"] == prev["meta"]["classes"],
          "round-1 meta %r" % {k: v for k, v in meta.items() if k != "classes"})
    check(list(got) == list(prev["tensors"]), "round-1 tensors are not the model's")
    for k in got:
        st = np.stack([stock.arr(r["tensors"][k]) for r in ur])
        want = np.median(st, axis=0) if st.dtype.kind == "f" else st.max(axis=0)
        check(got[k].dtype == st.dtype and got[k].shape == st.shape[1:] and np.array_equal(got[k], want),
              "round-1 %s is not the median of the updates" % k)
    # the median is not FedAvg: the weighted mean differs
    w = np.array([r["meta"]["num_samples"] for r in ur], np.float64)
    mean = sum(wk * stock.arr(r["tensors"]["fc.weight"]).astype(np.float64) for wk, r in zip(w / w.sum(), ur))
    check(np.abs(mean - got["fc.weight"]).max() > 1e-4, "round 1 equals FedAvg")
    # the example on its own: four updates (an even count: the mean of the two middle
    # values) with unequal num_batches_tracked (the maximum), and what it refuses
    prog = os.path.join(HERE, "..", "..", "python", "examples", "median_aggregate.py")
    m0p = os.path.join(T, "m0.mpk.zst")
    m0 = fedsm.read_record(m0p)
    g = np.random.default_rng(3)
    ups = []
    for k in range(4):
        ts = {n: (a + g.normal(size=a.shape).astype(np.float32) if a.dtype.kind == "f" else a + 10 * k + (k % 2))
              for n, a in m0.tensors.items()}
        p = os.path.join(T, "mu-%d.mpk.zst" % k)
        fedsm.write_record(p, "update", dict(m0.meta, client=7 - k, round=1, num_samples=10 + k), ts)
        ups.append((p, ts))
    out = os.path.join(T, "mu-out.mpk.zst")

    def run(*args):
        return subprocess.run([sys.executable, prog, "-m", m0p, "-o", out] + list(args), capture_output=True, text=True)
    r = run(*[p for p, _ in ups])
    check(r.returncode == 0, "median_aggregate.py on 4 updates: %s" % r.stderr)
    if r.returncode == 0:
        got = stock.tensors(out)
        meta = stock.recs(out)[0]["meta"]
        check(meta["clients"] == [4, 5, 6, 7] and meta["round"] == 1 and meta["num_samples"] == 46, "meta %r" % meta)
        for n, a in m0.tensors.items():
            st = np.stack([ts[n] for _, ts in ups])
            want = (np.median(st.astype(np.float64), axis=0).astype(np.float32) if a.dtype.kind == "f"
                    else st.max(axis=0))
            check(got[n].dtype == a.dtype and np.array_equal(got[n], want), "4 updates: %s" % n)
        nbt = [n for n in m0.tensors if n.endswith("num_batches_tracked")][0]
        check(got[nbt] == m0.tensors[nbt] + 31, "num_batches_tracked %s, not the maximum" % got[nbt])
    os.unlink(out)
    bad = dict(ups[0][1])
    bad["fc.bias"] = np.full_like(bad["fc.bias"], np.nan)
    fedsm.write_record(os.path.join(T, "mu-nan.mpk.zst"), "update", dict(m0.meta, client=9, round=1, num_samples=1), bad)
    fedsm.write_record(os.path.join(T, "mu-r2.mpk.zst"), "update", dict(m0.meta, client=9, round=2, num_samples=1),
                       ups[0][1])
    for args, rc, msg in (([ups[0][0], os.path.join(T, "mu-nan.mpk.zst")], 1, "NaN"),
                          ([ups[0][0], os.path.join(T, "mu-r2.mpk.zst")], 3, "round 2, not 1"),
                          ([ups[0][0], ups[0][0]], 3, "two updates from client 7"),
                          ([ups[0][0], m0p], 3, "expected update, got model"),
                          ([ups[0][0], os.path.join(T, "cm", "flipped_5.mpk.zst")], 3, "flipped_5"),
                          ([ups[0][0], os.path.join(T, "none.mpk.zst")], 4, "none.mpk.zst"),
                          ([], 2, "required")):
        r = run(*args)
        lines = [x for x in r.stderr.splitlines() if "error:" in x]
        check(r.returncode == rc and len(lines) == 1 and msg in lines[0] and not os.path.exists(out)
              and not glob.glob(out + ".tmp.*"), "median_aggregate.py %s: exit %d: %s" % (msg, r.returncode, r.stderr))


def main(a):
    if not a or a[0] in ("-h", "--help"):
        sys.exit(__doc__)
    if a[0] == "records":
        records(a[1])
    elif a[0] == "kinds":
        kinds(a[1])
    elif a[0] == "torch":
        torch_checks(a[1])
    elif a[0] == "median":
        median(a[1], a[2], a[3])
    else:
        sys.exit(__doc__)
    if FAILS:
        sys.exit("%d failures" % len(FAILS))
    print(a[0], "ok")


if __name__ == "__main__":
    main(sys.argv[1:])

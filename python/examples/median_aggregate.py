#!/usr/bin/python3
"""median_aggregate.py - a user's own aggregation rule, the worked example of docs/plugins.md:
the coordinate-wise median of the clients' models in place of FedAvg's weighted mean.

Called exactly as pipelines/fedavg.sh calls `aggregate` (fedavg.sh --aggregate-cmd PROG):

    median_aggregate.py -m PREV_MODEL -o OUT UPDATE...

Reads the previous global model and the round's `update` records, checks them as aggregate
does (the same architecture and tensors as the model, round = its round + 1, each client
once, every value finite), and writes OUT, one `model` record:
  - every float tensor (weights, biases, BatchNorm running mean and variance) is the
    element-wise median over the updates (numpy's: the mean of the two middle values for an
    even count), taken in float64 and stored as <f4; the sample counts do not weigh it;
  - integer tensors (each BatchNorm's num_batches_tracked) take the element-wise maximum,
    as FedAvg does (docs/algorithms.md 2): they count batches and nothing reads them;
  - meta: the previous model's, without what described it alone (inputs, producer, clients,
    num_samples, loss...), plus round (its round + 1), clients (the ids, ascending),
    num_samples (their sum), aggregation "median" and producer.
Errors: one line `median_aggregate.py: error: ...`; exit 2 usage, 3 bad input, 4 I/O, 1 a
non-finite update.  Uses only python/fedsm.py (numpy, msgpack, zstandard; no torch).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import fedsm  # noqa: E402  (python/fedsm.py, found beside this folder)

PROG = "median_aggregate.py"
ARCH_KEYS = ("arch", "depth", "width", "num_classes", "proj_dim")
# meta of the previous model that described it alone (as tools/aggregate.c drops them)
DROP = ("client", "num_samples", "loss", "inputs", "producer", "round", "clients", "epochs", "lr")


def die(msg, code):
    print("%s: error: %s" % (PROG, msg), file=sys.stderr)
    sys.exit(code)


def median_model(prev, updates):
    """The new global model record from the previous one and the updates (fedsm.Record)."""
    want_round = int(prev.meta.get("round", 0)) + 1
    seen = set()
    for path, u in updates:
        for k in ("client", "round", "num_samples"):
            if not isinstance(u.meta.get(k), int):
                die("update %s: meta.%s missing (stream %s, field meta.%s)" % (path, k, path, k), 3)
        c = u.meta["client"]
        if c in seen:
            die("two updates from client %d (%s)" % (c, path), 3)
        seen.add(c)
        if u.meta["round"] != want_round:
            die("update of client %d is for round %d, not %d (stream %s, field meta.round)"
                % (c, u.meta["round"], want_round, path), 3)
        for k in ARCH_KEYS:
            if k in u.meta and k in prev.meta and u.meta[k] != prev.meta[k]:
                die("update of client %d is another architecture (stream %s, field meta.%s)" % (c, path, k), 3)
        if set(u.tensors) != set(prev.tensors):
            extra = sorted(set(u.tensors) ^ set(prev.tensors))[0]
            die("update of client %d: tensor %s is not in both it and the model (stream %s)" % (c, extra, path), 3)
        for k, a in prev.tensors.items():
            b = u.tensors[k]
            if b.dtype != a.dtype or b.shape != a.shape:
                die("update of client %d: tensor %s is %s %s, the model's %s %s (stream %s)"
                    % (c, k, b.dtype.str, list(b.shape), a.dtype.str, list(a.shape), path), 3)
            if b.dtype.kind == "f" and not np.isfinite(b).all():
                die("update of client %d: tensor %s holds %d NaN/Inf values (stream %s)"
                    % (c, k, int((~np.isfinite(b)).sum()), path), 1)
    ups = [u for _, u in sorted(updates, key=lambda pu: pu[1].meta["client"])]
    tensors = {}
    for k, a in prev.tensors.items():
        stack = np.stack([u.tensors[k] for u in ups])
        if a.dtype.kind == "f":
            tensors[k] = np.median(stack.astype(np.float64), axis=0).astype(a.dtype)
        else:
            tensors[k] = stack.max(axis=0)
    meta = {k: v for k, v in prev.meta.items() if k not in DROP}
    meta.update(round=want_round, clients=[u.meta["client"] for u in ups],
                num_samples=sum(u.meta["num_samples"] for u in ups), aggregation="median",
                producer="%s (%s)" % (PROG, fedsm.PRODUCER))
    return meta, tensors


def main(argv):
    ap = argparse.ArgumentParser(
        prog=PROG, description="Coordinate-wise median of client updates (the worked example of "
        "docs/plugins.md; pipelines/fedavg.sh --aggregate-cmd runs it as aggregate).",
        epilog="example: %s -m round-000/model.mpk.zst -o round-001/model.mpk.zst "
        "round-001/update-*.mpk.zst\nexit: 0 ok, 1 non-finite update, 2 usage, 3 bad input, 4 I/O"
        % PROG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True, help="the previous global model (kind model)")
    ap.add_argument("-o", "--out", required=True, help="the new global model (written to OUT.tmp.PID, renamed)")
    ap.add_argument("updates", nargs="+", metavar="UPDATE", help="client updates (kind update)")
    a = ap.parse_args(argv)  # exits 2 with a usage line on bad options
    try:
        prev = fedsm.read_record(a.model, "model")
        updates = []
        for p in a.updates:
            recs = fedsm.read_records(p)
            if not recs:
                die("no records in %s (empty stream)" % p, 3)
            for r in recs:
                if r.kind != "update":
                    die("wrong record kind (stream %s, field kind): expected update, got %s" % (p, r.kind), 3)
                updates.append((p, r))
        meta, tensors = median_model(prev, updates)
        fedsm.write_record(a.out, "model", meta, tensors)
    except fedsm.FormatError as e:
        die(str(e), 3)
    except OSError as e:
        die("%s (%s)" % (e.strerror or e, e.filename or a.out), 4)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

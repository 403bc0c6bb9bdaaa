#!/usr/bin/env bash
# FedSM end to end (pipelines/fedsm.sh; issue 12) on generated data, tiny (width 4, 4 clients,
# 3 rounds, the last 2 retraining, 5 pseudo-features per class), with a class relevance the
# test makes (clip-embed --import of a random 10 x 6 .npy):
# - the schedule: round 1 evaluates model.mpk.zst (and has no retrained model), rounds 2-3
#   evaluate retrained.mpk.zst (metrics equal evaluate -m retrained), whose body is the
#   FedAvg model's and whose fc differs;
# - aggregate --heads equals numpy's num_samples-weighted, normalised mean of the clients'
#   heads (1e-6), the body unchanged, in the run and on heads of unequal num_samples; each
#   head's num_samples is its client's sample count;
# - round 3's prototypes (client 0) and pseudo-features (both selected clients) are what
#   local-train --prototypes and featgen make from round 3's FedAvg model (1e-6);
# - featgen's mix-up against numpy on a shard of one sample per class (whose local
#   prototypes are the samples' unit features): each pseudo-feature is lam P_c + (1 - lam) f
#   with lam on its range and grid, and --select det draws by S with the row-mean diagonal;
# - aggregate --prototypes equals numpy's count-weighted mean of the unit-normalised client
#   means (1e-6), counts summed; local-train --prototypes' counts are the shard's label
#   counts and its means unit-norm (the means themselves against PyTorch: unit test_proto);
# - TERM mid-run (after round 2's prototypes, before round 3's retrained model) and resume
#   ends bit-identical; --body FEDAVG_RUN gives the same models; a FedSM body retrained in
#   rounds this run does not retrain lends its FedAvg models, not its metrics;
# - bad input: a relevance matrix of the wrong size and NaN prototypes to featgen, a NaN
#   client prototype to aggregate, --select prob without --relevance, an unknown class for
#   clip-embed --wordnet: one error line, non-zero exit, no output.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
PIPE=$FEDSM_ROOT/pipelines
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "Debian python3 with numpy, msgpack, zstandard needed"
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
cp "$FEDSM_ROOT/tests/tools/rec.py" "$T/rec.py"   # the record helpers (read, tensors, write)
py() { PYTHONPATH=$T $PY - "$@"; }
py "$T" <<'PY' || fail "making the embeddings"
import sys, numpy as np
T = sys.argv[1]
g = np.random.default_rng(5)
np.save(f"{T}/emb.npy", g.normal(0, 1, (10, 6)).astype(np.float32))
np.save(f"{T}/emb7.npy", g.normal(0, 1, (7, 6)).astype(np.float32))
names = open(f"{T}/data/batches.meta.txt").read().split()   # the model's classes (featgen checks them)
open(f"{T}/classes.txt", "w").write("".join(n + "\n" for n in names))
open(f"{T}/classes7.txt", "w").write("".join(n + "\n" for n in names[:7]))
PY
"$B/clip-embed" --import "$T/emb.npy" --classes "$T/classes.txt" -o "$T/rel.mpk.zst" -q || fail "clip-embed --import"
"$B/clip-embed" --import "$T/emb7.npy" --classes "$T/classes7.txt" -o "$T/rel7.mpk.zst" -q || fail "clip-embed --import 7"
P=(--data "$T/data" --if 4 --clients 4 --per-round 2 --rounds 3 --epochs 1 --batch 16 --width 4 --jobs 2 -q)
M=(--relevance "$T/rel.mpk.zst" --retrain-rounds 2 --per-class 5 --head-epochs 3)

# --keep-updates: the checks below read the clients' files (pruned by default)
"$PIPE/fedsm.sh" "${P[@]}" "${M[@]}" --keep-updates --run "$T/run" >/dev/null || fail "fedsm.sh"
mv "$T/run" "$T/a"
A=$T/a
[ "$(wc -l < "$A/metrics.csv")" = 4 ] || fail "metrics.csv rows: $(cat "$A/metrics.csv")"
# the schedule: round 1 the FedAvg model, rounds 2-3 the averaged retrained heads
[ ! -e "$A/round-001/retrained.mpk.zst" ] && [ ! -e "$A/round-001/prototypes.mpk.zst" ] || fail "round 1 retrained"
for r in 1 2 3; do
    d=$(printf '%s/round-%03d' "$A" $r) m=retrained.mpk.zst; [ $r != 1 ] || m=model.mpk.zst
    "$B/evaluate" -m "$d/$m" --test "$A/partition/test.mpk.zst" -p "$A/partition/partition.mpk.zst" \
        --label fedsm --csv "$T/ev-$r.csv" -q || fail "evaluate round $r"
    cmp -s "$T/ev-$r.csv" "$d/metrics.csv" || fail "round $r does not evaluate $m: $(tail -n1 "$d/metrics.csv") vs $(tail -n1 "$T/ev-$r.csv")"
done
py "$A" <<'PY' || fail "heads, prototypes"
import sys, glob
from rec import tensors, recs, np
A = sys.argv[1]
for r in (2, 3):
    d = f"{A}/round-{r:03d}"
    m, out = tensors(f"{d}/model.mpk.zst"), tensors(f"{d}/retrained.mpk.zst")
    hpaths = sorted(glob.glob(f"{d}/head-*.mpk.zst"))
    heads = [recs(p)[0] for p in hpaths]
    assert len(heads) == 2, len(heads)
    # each head weighs its client's sample count n_k (5.4 step 5), not its pseudo-feature count
    for p, h in zip(hpaths, heads):
        kk = p.rsplit("head-", 1)[1][:2]  # head-KK.mpk.zst
        n = len(tensors(f"{A}/partition/client-{kk}.mpk.zst")["labels"])
        assert h["meta"]["num_samples"] == n, (p, h["meta"]["num_samples"], n)
    w = np.array([h["meta"]["num_samples"] for h in heads], dtype=np.float64)
    assert (w > 0).all(), w
    w /= w.sum()
    for k in m:
        if k.startswith("fc."):
            want = sum(wk * tensors_k for wk, tensors_k in
                       zip(w, [np.frombuffer(h["tensors"][k]["data"], "<f4").reshape(h["tensors"][k]["shape"]) for h in heads]))
            assert np.abs(out[k] - want).max() < 1e-6, (r, k, np.abs(out[k] - want).max())
            assert np.abs(out[k] - m[k]).max() > 0, (r, k, "the head did not change")
        else:
            assert (out[k] == m[k]).all(), (r, k, "body changed")
    # prototypes: count-weighted mean of the unit-normalised client means
    cl = [tensors(p) for p in sorted(glob.glob(f"{d}/proto-*.mpk.zst"))]
    assert len(cl) == 4, len(cl)
    g = tensors(f"{d}/prototypes.mpk.zst")
    num = np.zeros(g["means"].shape)
    den = np.zeros(g["means"].shape[0])
    for c in cl:
        mu = c["means"].astype(np.float64)
        n = np.linalg.norm(mu, axis=1, keepdims=True)
        num += c["counts"][:, None] * np.where(n > 0, mu / np.maximum(n, 1e-12), 0)
        den += c["counts"]
    want = np.where(den[:, None] > 0, num / np.maximum(den[:, None], 1), 0)
    assert np.abs(g["means"] - want).max() < 1e-6, np.abs(g["means"] - want).max()
    assert (g["counts"] == sum(c["counts"] for c in cl)).all()
# a client's prototypes: its shard's label counts, unit-norm means (0 rows for absent classes)
for k in range(4):
    p = tensors(f"{A}/round-002/proto-{k:02d}.mpk.zst")
    y = tensors(f"{A}/partition/client-{k:02d}.mpk.zst")["labels"]
    assert (p["counts"] == np.bincount(y, minlength=10)).all(), (k, p["counts"])
    n = np.linalg.norm(p["means"], axis=1)
    assert (np.abs(n[p["counts"] > 0] - 1) < 1e-5).all() and (n[p["counts"] == 0] == 0).all(), (k, n)
PY

# round 3's prototypes and pseudo-features come from round 3's FedAvg model (5.4 steps 1, 3):
# client 0's prototypes and every selected client's pseudo-features made again from it are
# the run's (the pipeline's options: seed 7, one thread, --proto-bn eval, --select prob)
D3=$A/round-003
"$B/local-train" -m "$D3/model.mpk.zst" -d "$A/partition/client-00.mpk.zst" --epochs 0 --seed 7 --threads 1 \
    --prototypes "$T/proto-00.mpk.zst" --proto-bn eval -q || fail "local-train --prototypes"
for f in "$D3"/pseudo-*.mpk.zst; do
    kk=${f##*pseudo-}; kk=${kk%.mpk.zst}
    "$B/featgen" --method fedsm -m "$D3/model.mpk.zst" -d "$A/partition/client-$kk.mpk.zst" -P "$D3/prototypes.mpk.zst" \
        -r "$T/rel.mpk.zst" --select prob --per-class 5 --proto-bn eval --round 3 --seed 7 --threads 1 \
        -o "$T/pseudo-$kk.mpk.zst" -q || fail "featgen client $kk"
done
py "$T" "$D3" <<'PY' || fail "round 3's prototypes or pseudo-features are not made from round 3's model"
import sys, glob, os
from rec import tensors, np
T, D3 = sys.argv[1:]
a, b = tensors(f"{T}/proto-00.mpk.zst"), tensors(f"{D3}/proto-00.mpk.zst")
assert np.abs(a["means"] - b["means"]).max() < 1e-6 and (a["counts"] == b["counts"]).all(), "prototypes of client 00"
pseudo = sorted(glob.glob(f"{D3}/pseudo-*.mpk.zst"))
assert len(pseudo) == 2, pseudo
for p in pseudo:
    a, b = tensors(p), tensors(f"{T}/{os.path.basename(p)}")
    assert (a["labels"] == b["labels"]).all() and np.abs(a["features"] - b["features"]).max() < 1e-6, p
PY

# the mix-up against numpy (5.2, 5.4 step 3): a shard of one sample per class (the first of
# each class over the clients), whose local prototypes (local-train --prototypes) are then
# each sample's unit feature f; featgen --select det --per-class 10 must give for class c
# rows lam P_c + (1 - lam) f_y, lam in [0.35, 0.95] on the 0.01 grid (each row matched to its
# sample and lam by least squares, residual < 1e-5), every sample once, in descending
# S'[c, y] (S' = S with its diagonal replaced by the row mean; weights <= 0 last)
py "$T" "$A" <<'PY' || fail "writing the one-sample-per-class shard"
import sys
from rec import recs, write, np
T, A = sys.argv[1:]
rs = [recs(f"{A}/partition/client-{k:02d}.mpk.zst")[0] for k in range(4)]
r, ts = rs[0], {}
for k in r["tensors"]:
    ts[k] = np.concatenate([np.frombuffer(x["tensors"][k]["data"], x["tensors"][k]["type"]).reshape(x["tensors"][k]["shape"])
                            for x in rs])
keep = [int(np.flatnonzero(ts["labels"] == c)[0]) for c in range(10)]
for k, t in r["tensors"].items():
    t["data"], t["shape"] = np.ascontiguousarray(ts[k][keep]).tobytes(), list(ts[k][keep].shape)
write(f"{T}/one.mpk.zst", r)
PY
"$B/local-train" -m "$D3/model.mpk.zst" -d "$T/one.mpk.zst" --epochs 0 --prototypes "$T/one-proto.mpk.zst" -q ||
    fail "local-train --prototypes on one sample per class"
"$B/featgen" --method fedsm -m "$D3/model.mpk.zst" -d "$T/one.mpk.zst" -P "$D3/prototypes.mpk.zst" -r "$T/rel.mpk.zst" \
    --select det --per-class 10 --round 3 -o "$T/one-pseudo.mpk.zst" -q || fail "featgen --select det"
py "$T" "$D3" <<'PY' || fail "featgen's mix-up differs from numpy's"
import sys
from rec import tensors, np
T, D3 = sys.argv[1:]
mu = tensors(f"{T}/one-proto.mpk.zst")["means"].astype(np.float64)  # each sample's unit feature
P = tensors(f"{D3}/prototypes.mpk.zst")["means"].astype(np.float64)
S = tensors(f"{T}/rel.mpk.zst")["relevance"].astype(np.float64)
C = len(S)
S[np.arange(C), np.arange(C)] = S.mean(1)
out = tensors(f"{T}/one-pseudo.mpk.zst")
x, lab = out["features"].astype(np.float64), out["labels"]
assert x.shape == (C * C, mu.shape[1]) and (lab == np.repeat(np.arange(C), C)).all(), (x.shape, lab)
worst = 0
for c in range(C):
    picks = []
    for j in range(C):
        row, best = x[c * C + j], None
        for y in range(C):
            d = P[c] - mu[y]
            lam = (row - mu[y]) @ d / (d @ d)
            res = np.abs(row - mu[y] - lam * d).max()
            if best is None or res < best[0]:
                best = (res, y, lam)
        res, y, lam = best
        worst = max(worst, res)
        assert res < 1e-5, f"class {c} row {j}: no sample mixes to it (residual {res})"
        assert 0.35 - 1e-6 <= lam <= 0.95 + 1e-6 and abs(lam * 100 - round(lam * 100)) < 1e-3, (c, j, lam)
        picks.append(y)
    assert sorted(picks) == list(range(C)), f"class {c}: samples drawn {picks}"
    w = S[c, picks]
    npos = int((w > 0).sum())
    assert (np.diff(w[:npos]) <= 0).all() and (w[npos:] <= 0).all(), f"class {c}: order {picks}, S' {w}"
print(f"mix-up of one sample per class: max residual {worst:.2g}")
PY

# the generated clients all hold 54 samples: aggregate --heads once more on heads of unequal
# num_samples (10, 30, 5), retrained here on round 2's pseudo-features
for k in 0 1 2; do
    n=(10 30 5)
    "$B/retrain" --features "$A/round-002/pseudo-0$((k % 2)).mpk.zst" -m "$A/round-002/model.mpk.zst" --epochs $((k + 1)) \
        --batch 16 --lr 0.1 --num-samples ${n[$k]} --client $k -o "$T/h$k.mpk.zst" -q || fail "retrain head $k"
done
"$B/aggregate" --heads -m "$A/round-002/model.mpk.zst" -o "$T/heads.mpk.zst" "$T/h2.mpk.zst" "$T/h0.mpk.zst" "$T/h1.mpk.zst" -q ||
    fail "aggregate --heads"
py "$T" "$A" <<'PY' || fail "aggregate --heads on unequal clients"
import sys
from rec import tensors, np
T, A = sys.argv[1:]
m, out = tensors(f"{A}/round-002/model.mpk.zst"), tensors(f"{T}/heads.mpk.zst")
h = [tensors(f"{T}/h{k}.mpk.zst") for k in range(3)]
w = np.array([10, 30, 5], dtype=np.float64) / 45
for k in m:
    if k.startswith("fc."):
        want = sum(wk * hk[k].astype(np.float64) for wk, hk in zip(w, h))
        assert np.abs(out[k] - want).max() < 1e-6, (k, np.abs(out[k] - want).max())
    else:
        assert (out[k] == m[k]).all(), (k, "body changed")
PY

# TERM after round 2's prototypes (asserted: before round 3's retrained model), resume
setsid "$PIPE/fedsm.sh" "${P[@]}" "${M[@]}" --run "$T/run" >/dev/null 2>&1 &
pid=$!
for i in $(seq 1 1200); do [ -f "$T/run/round-002/prototypes.mpk.zst" ] && break; sleep 0.05; done
kill -STOP -- -$pid 2>/dev/null
[ -f "$T/run/round-002/prototypes.mpk.zst" ] || fail "round 2's prototypes never appeared"
[ ! -f "$T/run/round-003/retrained.mpk.zst" ] || fail "the run reached its last round before the kill"
term_stopped_group $pid; rc=$?
[ $rc = 143 ] || fail "a TERMed pipeline exits 143, got $rc"
"$PIPE/fedsm.sh" "${P[@]}" "${M[@]}" --run "$T/run" >/dev/null || fail "resume"
cmp "$T/run/round-003/retrained.mpk.zst" "$A/round-003/retrained.mpk.zst" || fail "resumed run's final retrained model differs"
diff "$T/run/metrics.csv" "$A/metrics.csv" >&2 || fail "resumed run's metrics differ"
rm -rf "$T/run"

# --body: the FedAvg models of a FedAvg run with the same options
"$PIPE/fedavg.sh" "${P[@]}" --run "$T/fedavg" >/dev/null || fail "fedavg.sh for --body"
"$PIPE/fedsm.sh" "${P[@]}" "${M[@]}" --body "$T/fedavg" --keep-updates --run "$T/b" >/dev/null || fail "fedsm.sh --body"
py "$T" <<'PY' || fail "--body: other models"
import sys
from rec import tensors
T = sys.argv[1]
for r, f in ((1, "model"), (2, "model"), (3, "model"), (2, "retrained"), (3, "retrained"), (2, "prototypes")):
    a, b = (tensors(f"{T}/{x}/round-{r:03d}/{f}.mpk.zst") for x in ("a", "b"))
    assert list(a) == list(b) and all((a[k] == b[k]).all() for k in a), f"round {r}: {f} differs"
PY
diff "$T/b/metrics.csv" "$A/metrics.csv" >&2 || fail "--body: metrics differ"
ls "$T"/b/round-001/update-* >/dev/null 2>&1 && fail "--body still trained the clients"
# a FedSM run as the body of one that retrains fewer rounds: round 2, retrained in the body,
# is not retrained here, so its metrics are FedAvg's (the body's are of its retrained model)
"$PIPE/fedsm.sh" "${P[@]}" "${M[@]}" --retrain-rounds 1 --body "$T/b" --run "$T/c" >/dev/null || fail "fedsm.sh --body FEDSM_RUN"
[ "$(sed -n 2p "$T/c/round-002/metrics.csv" | cut -d, -f2-)" = "$(sed -n 2p "$T/fedavg/round-002/metrics.csv" | cut -d, -f2-)" ] ||
    fail "--body a FedSM run: round 2 took the body's retrained metrics: $(sed -n 2p "$T/c/round-002/metrics.csv") (FedAvg: $(sed -n 2p "$T/fedavg/round-002/metrics.csv"))"

# bad input
FG=(--method fedsm -m "$A/round-002/model.mpk.zst" -d "$A/partition/client-01.mpk.zst" --per-class 5 -q)
"$B/featgen" "${FG[@]}" -P "$A/round-002/prototypes.mpk.zst" -r "$T/rel.mpk.zst" -o "$T/ok.mpk.zst" || fail "featgen fedsm"
expect_rc 3 "$B/featgen" "${FG[@]}" -P "$A/round-002/prototypes.mpk.zst" -r "$T/rel7.mpk.zst" -o "$T/bad.mpk.zst" &&
    expect_one_error_line
py "$T" "$A" <<'PY' || fail "writing NaN prototypes"
import sys
from rec import recs, write, np
T, A = sys.argv[1:]
for src, dst in ((f"{A}/round-002/prototypes.mpk.zst", "nanproto"), (f"{A}/round-002/proto-02.mpk.zst", "nanclient")):
    r = recs(src)[0]
    x = r["tensors"]["means"]
    a = np.frombuffer(x["data"], "<f4").copy()
    a[11] = np.nan
    x["data"] = a.tobytes()
    write(f"{T}/{dst}.mpk.zst", r)
PY
expect_rc 3 "$B/featgen" "${FG[@]}" -P "$T/nanproto.mpk.zst" -r "$T/rel.mpk.zst" -o "$T/bad.mpk.zst" && expect_one_error_line
expect_rc 3 "$B/aggregate" --prototypes -o "$T/bad.mpk.zst" "$A/round-002/proto-00.mpk.zst" "$T/nanclient.mpk.zst" -q &&
    expect_one_error_line
[ ! -e "$T/bad.mpk.zst" ] || fail "a refused command left an output file"
expect_rc 2 "$PIPE/fedsm.sh" "${P[@]}" --select prob --run "$T/norel" && expect_one_error_line
grep -q -- "--relevance" "$T/err" || fail "--select prob without --relevance not named: $(cat "$T/err")"
[ ! -e "$T/norel" ] || fail "a refused pipeline made its run directory"
if [ -f "${WNSEARCHDIR:-/usr/share/wordnet}/index.noun" ]; then
    printf 'cat\nqzxwvlorbnik\ndog\n' > "$T/unknown.txt"
    expect_rc 3 "$B/clip-embed" --wordnet --classes "$T/unknown.txt" -o "$T/bad.mpk.zst" && expect_one_error_line
    grep -q "qzxwvlorbnik" "$T/err" || fail "the unknown class is not named: $(cat "$T/err")"
    [ ! -e "$T/bad.mpk.zst" ] || fail "clip-embed --wordnet left an output file"
else
    skip_check "no WordNet database (wordnet-base): the unknown-class check"
fi
done_tests

#!/usr/bin/env bash
# CReFF and CLIP2FL end to end (pipelines/creff.sh, clip2fl.sh; issue 11) on generated data,
# tiny (width 4, 4 clients, 3 rounds, 10 features per class, 5 matching steps):
# (a) every round's evaluated model is the FedAvg body with the retrained head: the
#     retrained model's tensors equal model.mpk.zst's except fc, which differs, and the
#     round's metrics.csv equals `evaluate -m model --head retrained`;
# (b) the federated features persist: round 2's are round 1's moved (same labels, a small
#     non-zero change, exactly what featgen makes from round 1's), not re-drawn (a fresh
#     N(0,1) start moved by the same gradients differs), round 1's are the N(0,1) draw moved;
# (c) a run TERMed after round 1's retrained model (asserted: before round 3's) resumes and
#     ends bit-identical (final retrained model, metrics.csv) to an uninterrupted run;
# (d) --body FEDAVG_RUN gives the same models and retrained models as training again;
# (e) bad input: a gradients record of another model's shape to featgen, features with NaN
#     or a label out of range to featgen and retrain, aggregate --heads with a head of
#     another body: one error line, exit 3, no output file;
# CLIP2FL with the tiny CLIP of the tests (--proj 24, its embedding size): (a), (b) with the
# contrastive loss, featgen's loss (matching distance + contrastive term) against numpy, a
# rerun of a finished run changes nothing (CLIP embeddings made once);
# without CLIP weights one line naming them, exit 2; a missing embeddings file exit 4.
source "$(dirname "$0")/lib.sh"
B=$FEDSM_BIN
PIPE=$FEDSM_ROOT/pipelines
$PY -c 'import numpy, msgpack, zstandard' 2>/dev/null || skip "Debian python3 with numpy, msgpack, zstandard needed"
"$B/gen-demo" "$T/data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
P=(--data "$T/data" --if 4 --clients 4 --per-round 2 --rounds 3 --epochs 1 --batch 16 --width 4 --jobs 2 -q)
M=(--grad-repeats 1 --grad-batch 8 --features-per-class 10 --match-iters 5 --head-epochs 5)
FIX=$FEDSM_ROOT/tests/fixtures/clip
printf '#version: test\n' | gzip > "$T/merges.txt.gz"   # no merges: token ids stay in the tiny vocabulary
CLIPW=(--clip-weights "$FIX/tiny.safetensors" --vocab "$T/merges.txt.gz" --proj 24)

# py SCRIPT ARGS...: runs a check written in Python with the record helpers below
cp "$FEDSM_ROOT/tests/tools/rec.py" "$T/rec.py"   # the record helpers (read, tensors, write)
py() { PYTHONPATH=$T $PY - "$@"; }

# check_run RUN LABEL: (a) and (b) on a finished run
check_run() {
    local run=$1 label=$2 r
    for r in 1 2 3; do
        local d; d=$(printf '%s/round-%03d' "$run" $r)
        "$B/evaluate" -m "$d/model.mpk.zst" --head "$d/retrained.mpk.zst" --test "$run/partition/test.mpk.zst" \
            -p "$run/partition/partition.mpk.zst" --label "$label" --csv "$T/head-$r.csv" -q ||
            fail "$label: evaluate --head in round $r"
        cmp -s "$T/head-$r.csv" "$d/metrics.csv" ||
            fail "$label round $r: metrics.csv is not the body with the retrained head: $(tail -n1 "$d/metrics.csv") vs $(tail -n1 "$T/head-$r.csv")"
        rm -f "$T/head-$r.csv"
    done
    py "$run" <<'PY' || fail "$label: retrained models or features"
import sys
from rec import tensors, np
run = sys.argv[1]
for r in (1, 2, 3):
    m, t = tensors(f"{run}/round-{r:03d}/model.mpk.zst"), tensors(f"{run}/round-{r:03d}/retrained.mpk.zst")
    assert list(m) == list(t), f"round {r}: tensor names differ"
    for k in m:
        same = m[k].shape == t[k].shape and (m[k] == t[k]).all()
        assert same != k.startswith("fc."), f"round {r}: {k} {'equal' if same else 'differs'}"
f1, f2 = tensors(f"{run}/round-001/features.mpk.zst"), tensors(f"{run}/round-002/features.mpk.zst")
assert (f1["labels"] == f2["labels"]).all(), "labels changed between rounds"
assert f1["features"].shape == (100, m["fc.weight"].shape[1]), f1["features"].shape
rel = np.linalg.norm(f2["features"] - f1["features"]) / np.linalg.norm(f1["features"])
assert 0 < rel < 0.5, f"round 2's features moved by {rel} (relative) from round 1's"
print(f"features: round 1 -> 2 moved by {rel:.3g} relative")
PY
}

# featgen_like RUN R [ARGS...]: featgen as the pipeline runs it in round R (--method
# ${METHOD:-creff})
featgen_like() {
    local run=$1 r=$2 d p; shift 2
    d=$(printf '%s/round-%03d' "$run" "$r") p=$(printf '%s/round-%03d' "$run" $((r - 1)))
    local head=$p/retrained.mpk.zst; [ "$r" != 1 ] || head=$p/model.mpk.zst
    "$B/featgen" --method "${METHOD:-creff}" -m "$head" -g "$d/gradients.mpk.zst" --per-class 10 --iters 5 --lr 0.1 \
        --round "$r" --seed 7 -q "$@"
}

# kill_resume SCRIPT RUN REF ARGS...: TERM once round 1's retrained model exists (round 3's
# must not: asserted with the process group stopped), resume, compare with REF (a run made
# before in the same directory RUN and moved to REF: meta.inputs name the files)
kill_resume() {
    local script=$1 run=$2 ref=$3; shift 3
    setsid "$script" "$@" --run "$run" >/dev/null 2>&1 &
    local pid=$! i rc
    for i in $(seq 1 1200); do [ -f "$run/round-001/retrained.mpk.zst" ] && break; sleep 0.05; done
    kill -STOP -- -$pid 2>/dev/null
    [ -f "$run/round-001/retrained.mpk.zst" ] || fail "$script: round 1's retrained model never appeared"
    [ ! -f "$run/round-003/retrained.mpk.zst" ] || fail "$script: the run reached its last round before the kill"
    term_stopped_group $pid; rc=$?
    [ $rc = 143 ] || fail "$script: a TERMed pipeline exits 143, got $rc"
    "$script" "$@" --run "$run" >/dev/null || fail "$script: resume"
    cmp "$run/round-003/retrained.mpk.zst" "$ref/round-003/retrained.mpk.zst" || fail "$script: resumed run's final retrained model differs"
    cmp "$run/round-003/features.mpk.zst" "$ref/round-003/features.mpk.zst" || fail "$script: resumed run's final features differ"
    diff "$run/metrics.csv" "$ref/metrics.csv" >&2 || fail "$script: resumed run's metrics differ"
}

# ---- CReFF ----
"$PIPE/creff.sh" "${P[@]}" "${M[@]}" --run "$T/run" >/dev/null || fail "creff.sh"
mv "$T/run" "$T/a"
[ "$(wc -l < "$T/a/metrics.csv")" = 4 ] || fail "creff metrics.csv rows: $(cat "$T/a/metrics.csv")"
check_run "$T/a" creff
# (b) round 2's features are featgen's from round 1's; a fresh start differs; round 1's moved
featgen_like "$T/a" 2 --features "$T/a/round-001/features.mpk.zst" -o "$T/f2.mpk.zst" || fail "featgen round 2"
featgen_like "$T/a" 2 -o "$T/f2-fresh.mpk.zst" || fail "featgen round 2 from N(0,1)"
featgen_like "$T/a" 1 --iters 0 -o "$T/f1-init.mpk.zst" || fail "featgen --iters 0"
py "$T" <<'PY' || fail "features persist"
import sys
from rec import tensors, np
T = sys.argv[1]
f1, f2 = tensors(f"{T}/a/round-001/features.mpk.zst"), tensors(f"{T}/a/round-002/features.mpk.zst")
again, fresh, init = tensors(f"{T}/f2.mpk.zst"), tensors(f"{T}/f2-fresh.mpk.zst"), tensors(f"{T}/f1-init.mpk.zst")
assert (again["features"] == f2["features"]).all(), "round 2's features are not featgen's update of round 1's"
d = np.abs(fresh["features"] - f2["features"]).max()
assert d > 1e-4, f"round 2's features equal a fresh N(0,1) start moved once (max diff {d})"
x = init["features"]
assert abs(x.mean()) < 0.2 and abs(x.std() - 1) < 0.1, (x.mean(), x.std())
assert (init["labels"] == f1["labels"]).all() and (init["labels"] == np.repeat(np.arange(10), 10)).all()
d1 = np.abs(f1["features"] - x).max()
assert 0 < d1 < 1, f"round 1's features moved {d1} from the N(0,1) draw"
PY
# (c)
kill_resume "$PIPE/creff.sh" "$T/run" "$T/a" "${P[@]}" "${M[@]}"
rm -rf "$T/run"
# (d)
"$PIPE/fedavg.sh" "${P[@]}" --run "$T/fedavg" >/dev/null || fail "fedavg.sh for --body"
"$PIPE/creff.sh" "${P[@]}" "${M[@]}" --body "$T/fedavg" --keep-updates --run "$T/b" >/dev/null || fail "creff.sh --body"
py "$T" <<'PY' || fail "--body: other models"
import sys
from rec import tensors, np
T = sys.argv[1]
for r in (1, 2, 3):
    for f in ("model", "retrained", "features"):
        a, b = (tensors(f"{T}/{x}/round-{r:03d}/{f}.mpk.zst") for x in ("a", "b"))
        assert list(a) == list(b) and all((a[k] == b[k]).all() for k in a), f"round {r}: {f} differs"
PY
diff "$T/b/metrics.csv" "$T/a/metrics.csv" >&2 || fail "--body: metrics differ"
[ ! -e "$T/b/round-001/update-00.mpk.zst" ] && [ ! -e "$T/b/round-001/update-01.mpk.zst" ] &&
    [ ! -e "$T/b/round-001/update-02.mpk.zst" ] && [ ! -e "$T/b/round-001/update-03.mpk.zst" ] ||
    fail "--body still trained the clients"

# (e) bad input
"$B/aggregate" --init resnet8 --width 8 --partition "$T/a/partition/partition.mpk.zst" --seed 3 -o "$T/other.mpk.zst" -q
"$B/local-train" -m "$T/other.mpk.zst" -d "$T/a/partition/client-00.mpk.zst" --epochs 0 --gradients "$T/g-other.mpk.zst" \
    --grad-head "$T/other.mpk.zst" --grad-repeats 1 --grad-batch 4 -q || fail "gradients of the other model"
expect_rc 3 featgen_like "$T/a" 2 -g "$T/g-other.mpk.zst" -o "$T/bad.mpk.zst" && expect_one_error_line
py "$T" <<'PY' || fail "writing bad features"
import sys
from rec import recs
T = sys.argv[1]
r = recs(f"{T}/a/round-001/features.mpk.zst")[0]
def write(name, key, i, v):
    x = r["tensors"][key]
    a = np.frombuffer(x["data"], dtype=np.dtype(x["type"])).copy()
    a[i] = v
    s = dict(r, tensors=dict(r["tensors"], **{key: dict(x, data=a.tobytes())}))
    open(f"{T}/{name}.mpk.zst", "wb").write(zstandard.ZstdCompressor().compress(msgpack.packb(s, use_bin_type=True)))
import msgpack, zstandard, numpy as np
write("nan", "features", 37, np.nan)
write("label", "labels", 5, 10)
write("neglabel", "labels", 6, -1)
PY
for bad in nan label neglabel; do
    expect_rc 3 featgen_like "$T/a" 2 --features "$T/$bad.mpk.zst" -o "$T/bad.mpk.zst" && expect_one_error_line
    expect_rc 3 "$B/retrain" --features "$T/$bad.mpk.zst" -m "$T/a/round-001/model.mpk.zst" -o "$T/bad.mpk.zst" -q && expect_one_error_line
done
"$B/retrain" --features "$T/a/round-001/features.mpk.zst" -m "$T/a/round-001/model.mpk.zst" --num-samples 10 --client 0 \
    --epochs 1 -o "$T/h1.mpk.zst" -q || fail "retrain head 1"
"$B/retrain" --features "$T/a/round-001/features.mpk.zst" -m "$T/a/round-002/model.mpk.zst" --num-samples 10 --client 1 \
    --epochs 1 -o "$T/h2.mpk.zst" -q || fail "retrain head 2"
expect_rc 3 "$B/aggregate" --heads -m "$T/a/round-002/model.mpk.zst" -o "$T/bad.mpk.zst" "$T/h2.mpk.zst" "$T/h1.mpk.zst" -q &&
    expect_one_error_line && { grep -q "not trained on the body" "$T/err" || fail "other body not named: $(cat "$T/err")"; }
[ ! -e "$T/bad.mpk.zst" ] || fail "a refused command left an output file"
ls "$T"/bad.mpk.zst.tmp* 2>/dev/null && fail "temporaries left behind"

# ---- CLIP2FL with the tiny CLIP ----
if [ -f "$FIX/tiny.safetensors" ]; then
    "$PIPE/clip2fl.sh" "${P[@]}" "${M[@]}" "${CLIPW[@]}" --run "$T/c" >/dev/null || fail "clip2fl.sh"
    check_run "$T/c" clip2fl
    [ "$(wc -l < "$T/c/metrics.csv")" = 4 ] || fail "clip2fl metrics.csv rows"
    # round 2's features: featgen clip2fl's update of round 1's with the run's CLIP text
    # embeddings; creff's update (no contrastive loss) differs
    METHOD=clip2fl featgen_like "$T/c" 2 --features "$T/c/round-001/features.mpk.zst" -e "$T/c/clip.mpk.zst" \
        --beta 0.001 --tau 0.1 -o "$T/c2.mpk.zst" || fail "featgen clip2fl round 2"
    featgen_like "$T/c" 2 --features "$T/c/round-001/features.mpk.zst" -o "$T/c2-creff.mpk.zst" || fail "featgen creff on clip2fl's"
    py "$T" <<'PY' || fail "clip2fl features"
import sys
from rec import tensors, np
T = sys.argv[1]
f2, again, cr = (tensors(f"{T}/{n}.mpk.zst")["features"] for n in ("c/round-002/features", "c2", "c2-creff"))
assert (again == f2).all(), "round 2's features are not featgen clip2fl's update of round 1's"
assert np.abs(cr - f2).max() > 0, "the contrastive loss changed nothing"
PY
    # featgen's objective against numpy (docs/algorithms.md 3 step 6, 3.2, 4.3): the loss_first
    # of an update of round 1's features with beta 1 (the contrastive term as heavy as the
    # matching) is sum_c D_c + L_PCL of those features computed here from the round's head,
    # averaged gradients and text, with m = N / C = 10 copies (1e-5 relative)
    METHOD=clip2fl featgen_like "$T/c" 2 --features "$T/c/round-001/features.mpk.zst" -e "$T/c/clip.mpk.zst" \
        --beta 1 --tau 0.1 --iters 1 -o "$T/c2-loss.mpk.zst" || fail "featgen clip2fl --beta 1"
    py "$T" <<'PY' || fail "featgen's loss differs from numpy's"
import sys
from rec import recs, tensors, np
T = sys.argv[1]
F = tensors(f"{T}/c/round-001/features.mpk.zst")
f, y = F["features"].astype(np.float64), F["labels"]
hd = tensors(f"{T}/c/round-001/retrained.mpk.zst")
W, b = hd["fc.weight"].astype(np.float64), hd["fc.bias"].astype(np.float64)
g = tensors(f"{T}/c/round-002/gradients.mpk.zst")
text = tensors(f"{T}/c/clip.mpk.zst")["text"].astype(np.float64)
N, C = len(y), W.shape[0]
cosd = lambda a, v: 1 - (a * v).sum() / (np.linalg.norm(a) * np.linalg.norm(v) + 1e-6)
L = 0.0
for k, c in enumerate(g["classes"]):
    fc = f[y == c]
    z = fc @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[:, c] -= 1
    G, gb = p.T @ fc / len(fc), p.mean(0)
    L += sum(cosd(g["weight"][k][i].astype(np.float64), G[i]) for i in range(C)) + cosd(g["bias"][k], gb)
t = text / np.linalg.norm(text, axis=1, keepdims=True)
s = f @ t.T / 0.1
sy, mx = s[np.arange(N), y], s.max(1)
pcl = -(sy - mx) + np.log(N // C * np.exp(s - mx[:, None]).sum(1) - np.exp(sy - mx))
L += pcl.mean()
got = recs(f"{T}/c2-loss.mpk.zst")[0]["meta"]["loss_first"]
assert abs(got - L) <= 1e-5 * abs(L), (got, L)
print(f"featgen loss {got:.8g}, numpy {L:.8g}")
PY
    METHOD=clip2fl expect_rc 4 featgen_like "$T/c" 2 -e "$T/missing.mpk.zst" -o "$T/bad.mpk.zst" && expect_one_error_line
    [ ! -e "$T/bad.mpk.zst" ] || fail "featgen with missing embeddings left an output file"
    # (resume is creff.sh's, tested above; here: a finished run rerun changes nothing and
    # reuses its CLIP embeddings)
    before=$(stat -c '%n %Y %i' "$T/c/clip.mpk.zst" "$T/c/round-003/"*)
    "$PIPE/clip2fl.sh" "${P[@]}" "${M[@]}" "${CLIPW[@]}" --run "$T/c" >/dev/null || fail "clip2fl.sh rerun"
    [ "$(stat -c '%n %Y %i' "$T/c/clip.mpk.zst" "$T/c/round-003/"*)" = "$before" ] || fail "clip2fl.sh rerun rewrote files"
else
    skip_check "no tests/fixtures/clip/tiny.safetensors: CLIP2FL end to end"
fi
expect_rc 2 "$PIPE/clip2fl.sh" "${P[@]}" --run "$T/nc" && expect_one_error_line
grep -q -- "--clip-weights" "$T/err" || fail "clip2fl without weights does not name them: $(cat "$T/err")"
[ ! -e "$T/nc" ] || fail "clip2fl without weights made a run directory"
expect_rc 4 "$PIPE/clip2fl.sh" "${P[@]}" --clip "$T/missing.mpk.zst" --run "$T/nc" && expect_one_error_line
done_tests

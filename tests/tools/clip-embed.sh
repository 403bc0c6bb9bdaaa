# clip-embed tool tests: help/version/usage errors, a full run on the tiny committed CLIP
# with a small merges file and shards written here (checked in Python: shapes, unit norms,
# logits = exp(logit_scale) v.t, index copied, S symmetric with unit diagonal), the tool's
# output against PyTorch (tests/fixtures/clip/tool-refs.json: text, relevance, image
# embeddings and logits of the reference model end to end, to 1e-5 / 1e-3), caching,
# --bf16, --import, --tokenize, the same run from a pytorch_model.bin (same tensors), and
# corrupt/missing weights (exit 3/4, one error line, no output).
. "$(dirname "$0")/lib.sh"
BIN=${FEDSM_BIN:-build/bin}/clip-embed
FIX=tests/fixtures/clip
[ -x "$BIN" ] || skip "$BIN not built"
$PY -c 'import msgpack, zstandard, numpy' 2>/dev/null || skip "python3-msgpack/zstandard/numpy missing"

expect_rc 0 "$BIN" --help && grep -q 'usage: clip-embed' "$T/out" || fail "--help"
expect_rc 0 "$BIN" --version && grep -q 'clip-embed' "$T/out" || fail "--version"
expect_rc 2 "$BIN" && expect_one_error_line
expect_rc 2 "$BIN" --bogus && expect_one_error_line
expect_rc 2 "$BIN" -w "$FIX/tiny.safetensors" -c /dev/null && expect_one_error_line   # no -o
expect_rc 2 "$BIN" --batch 0 -o "$T/x.mpk.zst" && expect_one_error_line
expect_rc 2 "$BIN" --tokenize && expect_one_error_line

# a small merges file: ids stay below the tiny model's 1000-token vocabulary
# (made by tests/make_clip_fixtures.py: "c a", "ca t</w>", "d o", "do g</w>", "s h", "sh i", "shi p</w>")
cp "$FIX/merges-tiny.txt.gz" "$T/merges.txt.gz" || fail "no $FIX/merges-tiny.txt.gz"
printf 'cat\ndog\nship\n' > "$T/classes.txt"
$PY - "$T" <<'PYEOF' || fail "writing shards"
import io, sys, msgpack, zstandard, numpy as np
t = sys.argv[1]
def tensor(a):
    return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
def shard(path, n, h, w, client, label_dtype):
    rng = np.random.default_rng(client + 5)
    rec = {"fedsm": 1, "kind": "shard",
           "meta": {"classes": ["cat", "dog", "ship"], "client": client, "dataset": "test"},
           "tensors": {"images": tensor(rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8)),
                       "labels": tensor(rng.integers(0, 3, n).astype(label_dtype)),
                       "index": tensor(np.arange(100 * client, 100 * client + n, dtype="<i8"))}}
    end = {"fedsm": 1, "kind": "end", "meta": {"count": 1}, "tensors": {}}
    c = zstandard.ZstdCompressor()
    with open(path, "wb") as f:
        f.write(c.compress(msgpack.packb(rec, use_bin_type=True)))
        f.write(c.compress(msgpack.packb(end, use_bin_type=True)))
shard(t + "/client-00.mpk.zst", 5, 32, 32, 0, "<i8")
shard(t + "/client-01.mpk.zst", 3, 40, 48, 1, "<i4")
# an encoded shard (partition's form for image folders): `jpeg` bytes + `offsets`
try:
    from PIL import Image
    blobs = []
    for k in range(2):
        b = io.BytesIO()
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (30, 36, 3), dtype=np.uint8)).save(b, "PNG" if k else "JPEG")
        blobs.append(b.getvalue())
    off = np.cumsum([0] + [len(b) for b in blobs]).astype("<i8")
    rec = {"fedsm": 1, "kind": "shard", "meta": {"classes": ["cat", "dog", "ship"], "client": 2, "dataset": "test"},
           "tensors": {"jpeg": tensor(np.frombuffer(b"".join(blobs), dtype=np.uint8)), "offsets": tensor(off),
                       "labels": tensor(np.array([0, 1], dtype="<i4")), "index": tensor(np.array([7, 9], dtype="<i8"))}}
    c = zstandard.ZstdCompressor()
    with open(t + "/enc.mpk.zst", "wb") as f:
        f.write(c.compress(msgpack.packb(rec, use_bin_type=True)))
except ImportError:
    pass
np.save(t + "/emb.npy", np.random.default_rng(1).standard_normal((3, 24)).astype("<f8"))
PYEOF

RUN=("$BIN" -w "$FIX/tiny.safetensors" --vocab "$T/merges.txt.gz" -c "$T/classes.txt"
     -s "$T/client-00.mpk.zst" -s "$T/client-01.mpk.zst" --threads 2)
expect_rc 0 "${RUN[@]}" -o "$T/out.mpk.zst" || true
$PY - "$T/out.mpk.zst" "$FIX/tiny.safetensors" "$FIX/config.json" "$T/merges.txt.gz" "$T/client-00.mpk.zst" "$T/client-01.mpk.zst" <<'PYEOF' || fail "output contents"
import sys, io, msgpack, zstandard, numpy as np, hashlib
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
arr = lambda t: np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"])
kinds = [r["kind"] for r in recs]
assert kinds == ["embeddings", "teacher", "teacher", "end"], kinds
e = recs[0]
text, S, rt = arr(e["tensors"]["text"]), arr(e["tensors"]["relevance"]), arr(e["tensors"]["relevance_text"])
assert text.shape == (3, 24) and S.shape == (3, 3), (text.shape, S.shape)
assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
assert np.allclose(S, rt @ rt.T, atol=1e-5) and np.allclose(np.diag(S), 1, atol=1e-5)
assert e["meta"]["classes"] == ["cat", "dog", "ship"] and e["meta"]["prompts"] == ["a photo of a {}"]
assert abs(e["meta"]["logit_scale"] - 100) < 1e-3, e["meta"]["logit_scale"]
for r, n, client in ((recs[1], 5, 0), (recs[2], 3, 1)):
    v, lg, ix = arr(r["tensors"]["embeddings"]), arr(r["tensors"]["logits"]), arr(r["tensors"]["index"])
    assert v.shape == (n, 24) and lg.shape == (n, 3) and ix.shape == (n,)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.allclose(lg, 100 * v @ text.T, rtol=1e-4, atol=1e-3)
    assert list(ix) == list(range(100 * client, 100 * client + n))
    assert r["meta"]["client"] == client and r["meta"]["inputs"] == e["meta"]["inputs"]
# meta.inputs in the one form (lib/io/inputs.h): the digests of weights, config, vocabulary, shards
inp = e["meta"]["inputs"]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert isinstance(inp, dict) and sorted(inp) == ["options", "records"], inp
assert inp["records"] == [sha(p) for p in sys.argv[2:]], inp["records"]
assert len(inp["options"]) == 64 and int(inp["options"], 16) >= 0, inp["options"]
PYEOF

# against PyTorch: the whole tool (BPE, text tower, the mean over two templates, S, Resize +
# CenterCrop of 32x32 and 45x37 images, image tower, logits) on the classes, templates and
# pattern images of tests/fixtures/clip/tool-refs.json, which tests/make_clip_fixtures.py
# computed with the reference tokenizer and PyTorch model of tests/clip_ref.py and Pillow.
# Tolerance: max abs difference 1e-5 on the unit vectors and S (float32 rounding: ~3e-7
# seen), 1e-3 on logits (scale 100).
if $PY -c 'import PIL' 2>/dev/null; then
    $PY - "$T" "$FIX/tool-refs.json" <<'PYEOF' || fail "writing the reference shards"
import json, sys, msgpack, zstandard, numpy as np
sys.path.insert(0, "tests")
from make_clip_fixtures_lib import pattern_image
t, ref = sys.argv[1], json.load(open(sys.argv[2]))
def tensor(a):
    return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
for k, sh in enumerate(ref["shards"]):
    ims = np.stack([pattern_image(h, w, seed) for h, w, seed in sh["images"]])
    n = len(ims)
    rec = {"fedsm": 1, "kind": "shard", "meta": {"classes": ref["classes"], "client": k, "dataset": "test"},
           "tensors": {"images": tensor(ims), "labels": tensor(np.arange(n, dtype="<i8") % 3),
                       "index": tensor(np.arange(n, dtype="<i8") + 10 * k)}}
    end = {"fedsm": 1, "kind": "end", "meta": {"count": 1}, "tensors": {}}
    c = zstandard.ZstdCompressor()
    with open(f"{t}/ref-{k}.mpk.zst", "wb") as f:
        f.write(c.compress(msgpack.packb(rec, use_bin_type=True)) + c.compress(msgpack.packb(end, use_bin_type=True)))
open(f"{t}/ref-classes.txt", "w").write("\n".join(ref["classes"]) + "\n")
open(f"{t}/ref-prompts.txt", "w").write("\n".join(ref["prompts"]) + "\n")
PYEOF
    expect_rc 0 "$BIN" -w "$FIX/tiny.safetensors" --vocab "$FIX/merges-tiny.txt.gz" -c "$T/ref-classes.txt" \
        -p "$T/ref-prompts.txt" -s "$T/ref-0.mpk.zst" -s "$T/ref-1.mpk.zst" --threads 2 --batch 2 \
        -o "$T/ref-out.mpk.zst" || true
    $PY - "$T/ref-out.mpk.zst" "$FIX/tool-refs.json" <<'PYEOF' || fail "clip-embed output differs from PyTorch"
import io, json, sys, msgpack, zstandard, numpy as np
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
ref = json.load(open(sys.argv[2]))
arr = lambda t: np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"]).astype(np.float64)
assert [r["kind"] for r in recs] == ["embeddings", "teacher", "teacher", "end"], [r["kind"] for r in recs]
e = recs[0]
assert e["meta"]["prompts"] == ref["prompts"] and e["meta"]["relevance_prompts"] == ref["relevance_prompts"]
worst = {}
def cmp(name, got, want, tol):
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    d = float(np.abs(got - want).max())
    worst[name] = max(worst.get(name, 0.0), d)
    assert d <= tol, f"{name}: max |C - torch| = {d:.3g} > {tol}"
cmp("logit_scale", np.array(e["meta"]["logit_scale"]), ref["logit_scale"], 1e-3)
for key in ("text", "relevance_text", "relevance"):
    cmp(key, arr(e["tensors"][key]), ref[key], 1e-5)
for r, sh in zip(recs[1:3], ref["shards"]):
    cmp("embeddings", arr(r["tensors"]["embeddings"]), sh["embeddings"], 1e-5)
    cmp("logits", arr(r["tensors"]["logits"]), sh["logits"], 1e-3)
print("clip-embed vs PyTorch:", ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
PYEOF
else skip_check "PIL missing: clip-embed against the PyTorch reference"; fi

# the same weights as a pytorch_model.bin (torch.save zip): the same tensors, bit for bit
expect_rc 0 "$BIN" -w "$FIX/tiny.bin" "${RUN[@]:3}" -o "$T/bin.mpk.zst" || true
$PY - "$T/out.mpk.zst" "$T/bin.mpk.zst" <<'PYEOF' || fail "tiny.bin output differs from tiny.safetensors"
import sys, io, msgpack, zstandard
def recs(p):
    raw = zstandard.ZstdDecompressor().stream_reader(open(p, "rb"), read_across_frames=True).read()
    return list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
a, b = recs(sys.argv[1]), recs(sys.argv[2])
assert [r["kind"] for r in a] == [r["kind"] for r in b]
for x, y in zip(a, b):
    assert x["tensors"] == y["tensors"], x["kind"]
PYEOF

# encoded images (JPEG and PNG bytes + offsets)
if [ -f "$T/enc.mpk.zst" ]; then
    expect_rc 0 "$BIN" -w "$FIX/tiny.safetensors" --vocab "$T/merges.txt.gz" -s "$T/enc.mpk.zst" -o "$T/enc-out.mpk.zst"
    $PY - "$T/enc-out.mpk.zst" <<'PYEOF' || fail "encoded shard output"
import sys, io, msgpack, zstandard, numpy as np
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
t = recs[1]["tensors"]
v = np.frombuffer(t["embeddings"]["data"], "<f4").reshape(t["embeddings"]["shape"])
assert v.shape == (2, 24) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
assert list(np.frombuffer(t["index"]["data"], "<i8")) == [7, 9]
PYEOF
else skip_check "PIL missing: encoded-shard check"; fi

# cached: a second run does no work and leaves the file alone
before=$(stat -c %Y.%s "$T/out.mpk.zst"); sleep 1
expect_rc 0 "${RUN[@]}" -o "$T/out.mpk.zst" && grep -q 'up to date' "$T/err" || fail "second run not cached"
[ "$(stat -c %Y.%s "$T/out.mpk.zst")" = "$before" ] || fail "cached run rewrote the output"
printf 'a photo of the {}\n' > "$T/p.txt"
expect_rc 0 "${RUN[@]}" -p "$T/p.txt" -o "$T/out.mpk.zst" && ! grep -q 'up to date' "$T/err" || fail "changed prompts reused the cache"

# --bf16: its own cache entry, precision in the meta, teacher embeddings near fp32's
expect_rc 0 "${RUN[@]}" --bf16 -o "$T/out16.mpk.zst" && ! grep -q 'up to date' "$T/err" || fail "--bf16 run"
$PY - "$T/out.mpk.zst" "$T/out16.mpk.zst" <<'PYEOF' || fail "--bf16 output"
import sys, io, msgpack, zstandard, numpy as np
def recs(p):
    raw = zstandard.ZstdDecompressor().stream_reader(open(p, "rb"), read_across_frames=True).read()
    return list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
arr = lambda t: np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"])
a, b = recs(sys.argv[1]), recs(sys.argv[2])
assert a[1]["meta"]["precision"] == "fp32" and b[1]["meta"]["precision"] == "bf16"
assert a[0]["meta"]["inputs"] != b[0]["meta"]["inputs"]
for ra, rb in zip(a[1:3], b[1:3]):
    va, vb = arr(ra["tensors"]["embeddings"]), arr(rb["tensors"]["embeddings"])
    d = np.abs(va - vb).max()
    assert 0 < d < 2e-2, d
PYEOF

# --import: class embeddings from a .npy, no weights needed without shards
expect_rc 0 "$BIN" --import "$T/emb.npy" -c "$T/classes.txt" -o "$T/imp.mpk.zst"
expect_rc 3 "$BIN" --import "$T/emb.npy" -c /dev/stdin -o "$T/imp2.mpk.zst" <<< $'a\nb' && expect_one_error_line

# --tokenize
echo "Cat DOG" | "$BIN" --tokenize --vocab "$T/merges.txt.gz" > "$T/tok" || fail "--tokenize"
[ "$(cat "$T/tok")" = "519 513 515 520" ] || fail "--tokenize ids: $(cat "$T/tok")"
VOCAB=${FEDSM_SHARED_DATA:-../shared/data}/bpe_simple_vocab_16e6.txt.gz
if [ -f "$VOCAB" ]; then
    echo "a photo of a cat." | "$BIN" --tokenize --vocab "$VOCAB" > "$T/tok"
    [ "$(cat "$T/tok")" = "49406 320 1125 539 320 2368 269 49407" ] || fail "real vocab ids: $(cat "$T/tok")"
else skip_check "$VOCAB not found (set FEDSM_SHARED_DATA): real-vocabulary --tokenize check"; fi

# corrupt and missing weights: exit 3 / 4, one error line, no output left behind
head -c 20000 "$FIX/tiny.safetensors" > "$T/trunc.safetensors"
expect_rc 3 "$BIN" -w "$T/trunc.safetensors" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$T/bad.mpk.zst" \
    && expect_one_error_line && grep -q 'past the end' "$T/err" || fail "truncated weights message"
head -c 200000 "$FIX/tiny.bin" > "$T/trunc.bin"
expect_rc 3 "$BIN" -w "$T/trunc.bin" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$T/bad.mpk.zst" \
    && expect_one_error_line && grep -q 'truncated' "$T/err" || fail "truncated .bin message"
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a": nonsense }' > "$T/json.safetensors"
expect_rc 3 "$BIN" -w "$T/json.safetensors" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$T/bad.mpk.zst" && expect_one_error_line
expect_rc 4 "$BIN" -w "$T/missing.safetensors" --vocab "$T/merges.txt.gz" -c "$T/classes.txt" -o "$T/bad.mpk.zst" && expect_one_error_line
printf 'cat\ndog\nfrog\n' > "$T/other.txt"
expect_rc 3 "${RUN[@]}" -c "$T/other.txt" -o "$T/bad.mpk.zst" && expect_one_error_line
ls "$T" | grep -q '^bad\.mpk\.zst' && fail "failed run left an output file"
done_tests

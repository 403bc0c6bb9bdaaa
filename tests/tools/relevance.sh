# WordNet relevance (lib/models/wordnet.c, lib/fl/relevance.c) against NLTK's
# wup_similarity over the same Debian database (docs/algorithms.md section 5.2): every pair
# (both orders, and each class with itself) of the CIFAR-10 names, of the CIFAR-100 names
# with data/wordnet-cifar100.map, of the 98 CIFAR-100 names WordNet knows as they are (first
# senses, wrong ones included), and of hand-picked specs (instance hypernyms, two hypernym
# paths, sense keys, NLTK's chef/fireman case): same synset names, values within 1e-9
# (tests/helpers/wn-wup prints them at %.17g).  NLTK's reader needs a `lexnames` file that
# wordnet-base lacks: written below from the lexnames(5WN) table into a temporary copy.
# Then clip-embed's relevance sources: --wordnet (the record, every unresolved class named in
# one line, a missing or corrupt database) and --import of a torch.save'd tensor (a tiny one
# made here with torch, and the real CIFAR-100 CLIP text embeddings read where they lie):
# S = cosine of the rows; a 3-D or wrong-row-count import, NaN, a non-UTF-8 or gapped class
# list: one error line, exit 3, no output left behind.
. "$(dirname "$0")/lib.sh"
WN=${WNSEARCHDIR:-/usr/share/wordnet}
H=$FEDSM_BIN/../helpers/wn-wup
BIN=$FEDSM_BIN/clip-embed
[ -x "$H" ] || skip "$H not built"
[ -f "$WN/data.noun" ] || skip "no WordNet database in $WN (Debian package wordnet-base)"

# specs whose handling NLTK makes special
printf '%s\n' dog.n.01 'dog%1:05:00::' domestic_animal.n.01 canine.n.02 chef.n.01 fireman.n.01 \
    paris.n.01 london.n.01 einstein.n.01 mississippi.n.01 entity.n.01 'maple%1:20:00::' \
    'Lawn Mower' person.n.01 organism.n.01 > "$T/specs.txt"
grep -v -x -e aquarium_fish -e maple_tree data/cifar100-classes.txt > "$T/c100-raw.txt"
for set in "c10 data/cifar10-classes.txt -" "c100 data/cifar100-classes.txt data/wordnet-cifar100.map" \
           "c100raw $T/c100-raw.txt -" "specs $T/specs.txt -"; do
    set -- $set
    "$H" "$2" "$3" "$WN" > "$T/$1.c" 2> "$T/err" || { fail "wn-wup $2: $(cat "$T/err")"; continue; }
    echo "$1 $2 $3" >> "$T/sets"
done

if $PY -c 'import nltk' 2>/dev/null; then
    mkdir "$T/nltk"
    for f in "$WN"/*.*; do ln -s "$f" "$T/nltk/"; done
    $PY - "$T" <<'PYEOF' || fail "WordNet relevance differs from NLTK"
import sys, warnings
warnings.simplefilter("ignore")
from nltk.corpus.reader.wordnet import WordNetCorpusReader
t = sys.argv[1]
# lexnames(5WN): file number = position
names = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
         "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
         "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
         "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
         "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
         "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
         "adj.ppl").split()
cat = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
with open(t + "/nltk/lexnames", "w") as f:
    for i, n in enumerate(names):
        f.write("%02d\t%s\t%d\n" % (i, n, cat[n.split(".")[0]]))
wn = WordNetCorpusReader(t + "/nltk", None)
keys = {l.key(): s for s in wn.all_synsets("n") for l in s.lemmas()} if False else None
def resolve(spec):
    spec = spec.strip()
    if "%" in spec:
        lemma = spec.split("%")[0].lower()
        for s in wn.synsets(lemma, "n"):
            for l in s.lemmas():
                if l.key() == spec.lower():
                    return s
        raise KeyError(spec)
    spec = spec.lower().replace(" ", "_")
    return wn.synset(spec if spec.count(".") >= 2 and spec.split(".")[-2] == "n" else spec + ".n.01")
worst, pairs = 0.0, 0
for line in open(t + "/sets"):
    tag, cls_path, map_path = line.split()
    classes = [l.strip() for l in open(cls_path) if l.strip()]
    over = {}
    if map_path != "-":
        for l in open(map_path):
            l = l.strip()
            if l and not l.startswith("#"):
                name, spec = l.rsplit(None, 1)
                over[name.lower().replace(" ", "_")] = spec
    syn = [resolve(over.get(c.lower().replace(" ", "_"), c)) for c in classes]
    out = open(t + "/" + tag + ".c").read().splitlines()
    got_names = [l.split("\t")[1] for l in out[:len(classes)]]
    assert got_names == [s.name() for s in syn], (tag, [(a, b.name()) for a, b in zip(got_names, syn) if a != b.name()])
    rows = [list(map(float, l.split())) for l in out[len(classes):]]
    assert len(rows) == len(classes)
    for i, a in enumerate(syn):
        for j, b in enumerate(syn):
            ref = a.wup_similarity(b)
            d = abs(rows[i][j] - ref)
            worst = max(worst, d)
            pairs += 1
            assert d <= 1e-9, (tag, a.name(), b.name(), rows[i][j], ref)
d = wn.synset("dog.n.01")
assert d.wup_similarity(d) < 1, "NLTK changed: dog.n.01 with itself is 1"
print("NLTK: %d pairs, largest difference %.3g" % (pairs, worst))
PYEOF
else echo "note: python3-nltk missing; the NLTK comparison is skipped"; fi

# dog.n.01 with itself: canine.n.02 (min depth 13) is the subsumer, not dog (min depth 8)
awk 'NR == 16 { if ($1 != "0.9285714285714286") exit 1 }' "$T/specs.c" || fail "dog.n.01 self-similarity: $(sed -n 16p "$T/specs.c" | cut -c1-40)"

# ---- clip-embed --wordnet ----
if [ -x "$BIN" ]; then
    expect_rc 0 "$BIN" --wordnet --wordnet-map data/wordnet-cifar100.map -c data/cifar100-classes.txt -o "$T/wn.mpk.zst"
    $PY - "$T/wn.mpk.zst" "$T/c100.c" <<'PYEOF' || fail "--wordnet record"
import sys, io, msgpack, zstandard, numpy as np
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
recs = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))
assert [r["kind"] for r in recs] == ["embeddings", "end"], [r["kind"] for r in recs]
e = recs[0]
assert list(e["tensors"]) == ["relevance"], list(e["tensors"])
t = e["tensors"]["relevance"]
S = np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"])
ref = open(sys.argv[2]).read().splitlines()
assert S.dtype == np.float32 and S.shape == (100, 100)
assert np.array_equal(S, np.array([l.split() for l in ref[100:]], dtype=np.float64).astype(np.float32))
m = e["meta"]
assert m["relevance_source"] == "wordnet" and len(m["classes"]) == 100 and m["classes"][1] == "aquarium_fish"
assert m["synsets"][1] == "fish.n.01" and m["synsets"][4] == "beaver.n.07", m["synsets"][:5]
# meta.inputs in the one form (lib/io/inputs.h): records end with the map's digest
import hashlib
assert sorted(m["inputs"]) == ["options", "records"] and len(m["inputs"]["options"]) == 64, m["inputs"]
assert m["inputs"]["records"][-1] == hashlib.sha256(open("data/wordnet-cifar100.map", "rb").read()).hexdigest()
PYEOF
    before=$(stat -c %Y.%s "$T/wn.mpk.zst"); sleep 1
    expect_rc 0 "$BIN" --wordnet --wordnet-map data/wordnet-cifar100.map -c data/cifar100-classes.txt -o "$T/wn.mpk.zst" -v &&
        grep -q 'up to date' "$T/err" && [ "$(stat -c %Y.%s "$T/wn.mpk.zst")" = "$before" ] || fail "--wordnet rerun not cached"
    # every unknown class in one line; no output
    printf 'cat\nzzyzx\naquarium_fish\ndog\nqqq thing\n' > "$T/bad.txt"
    expect_rc 3 "$BIN" --wordnet -c "$T/bad.txt" -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "3 classes not resolved.*zzyzx, aquarium_fish, qqq thing" "$T/err" || fail "unresolved classes not all named: $(cat "$T/err")"
    printf 'zzyzx dog.n.99\n' > "$T/bad.map"
    expect_rc 3 "$BIN" --wordnet --wordnet-map "$T/bad.map" -c "$T/bad.txt" -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "zzyzx (map line 1: 'dog.n.99': noun 'dog' has only 7 senses)" "$T/err" || fail "bad map entry: $(cat "$T/err")"
    printf 'just-one-field\n' > "$T/bad.map"
    expect_rc 3 "$BIN" --wordnet --wordnet-map "$T/bad.map" -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    expect_rc 4 "$BIN" --wordnet --wordnet-dir "$T/nowhere" -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "wordnet-base" "$T/err" || fail "missing database message: $(cat "$T/err")"
    mkdir "$T/cut" && cp "$WN/index.noun" "$T/cut/" && head -c 3000000 "$WN/data.noun" > "$T/cut/data.noun"
    expect_rc 3 "$BIN" --wordnet --wordnet-dir "$T/cut" -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    sed 's/^\(04524313 06 n 01 vehicle 0 011 @ \)03100490/\103100491/' "$WN/data.noun" > "$T/cut/data.noun"
    expect_rc 3 "$BIN" --wordnet --wordnet-dir "$T/cut" -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "offset 03100491: not the start of a line" "$T/err" || fail "corrupt pointer: $(cat "$T/err")"
    expect_rc 2 "$BIN" --wordnet -w x.safetensors -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    expect_rc 2 "$BIN" --wordnet-map data/wordnet-cifar100.map -c data/cifar10-classes.txt -o "$T/x.mpk.zst" && expect_one_error_line
    # class lists: a gap, bad UTF-8
    printf 'cat\n\ndog\n' > "$T/gap.txt"
    expect_rc 3 "$BIN" --wordnet -c "$T/gap.txt" -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "gap.txt line 2: blank line" "$T/err" || fail "blank class line: $(cat "$T/err")"
    printf 'cat\nd\xffg\n' > "$T/latin.txt"
    expect_rc 3 "$BIN" --wordnet -c "$T/latin.txt" -o "$T/x.mpk.zst" && expect_one_error_line
    grep -q "latin.txt line 2: not UTF-8" "$T/err" || fail "non-UTF-8 class line: $(cat "$T/err")"
    ls "$T"/x.mpk.zst* 2>/dev/null && fail "a failed run left output behind"

    # ---- --import of torch.save'd tensors ----
    printf 'cat\ndog\nship\n' > "$T/c3.txt"
    if $PY -c 'import torch' 2>/dev/null; then
        $PY - "$T" <<'PYEOF' || fail "writing .pt files"
import sys, torch
t = sys.argv[1]
g = torch.Generator().manual_seed(3)
e = torch.randn(3, 7, generator=g)
torch.save(e, t + "/emb.pt")
torch.save(e.half(), t + "/emb16.pt")
torch.save({"text": e, "other": torch.zeros(2)}, t + "/dict.pt")
torch.save(torch.randn(3, 7, 2, generator=g), t + "/cube.pt")
torch.save(torch.randn(4, 7, generator=g), t + "/rows4.pt")
n = e.clone(); n[1, 2] = float("nan"); torch.save(n, t + "/nan.pt")
torch.save(e.t(), t + "/strided.pt")
PYEOF
        for f in emb emb16 dict; do
            expect_rc 0 "$BIN" --import "$T/$f.pt" -c "$T/c3.txt" -o "$T/$f.mpk.zst" || continue
            $PY - "$T/$f.mpk.zst" "$T/$f.pt" <<'PYEOF' || fail "--import $f.pt"
import sys, io, msgpack, zstandard, numpy as np, torch
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
e = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))[0]
arr = lambda t: np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"])
x = torch.load(sys.argv[2])
x = (x["text"] if isinstance(x, dict) else x).double().numpy()
x /= np.linalg.norm(x, axis=1, keepdims=True)
assert np.abs(arr(e["tensors"]["text"]) - x).max() < 1e-6
assert np.abs(arr(e["tensors"]["relevance"]) - x @ x.T).max() < 1e-6
assert e["meta"]["relevance_source"] == "import"
PYEOF
        done
        for f in cube rows4 nan strided; do
            expect_rc 3 "$BIN" --import "$T/$f.pt" -c "$T/c3.txt" -o "$T/x.mpk.zst" && expect_one_error_line
        done
        grep -q "strided.pt.*not contiguous" "$T/err" || fail "strided .pt: $(cat "$T/err")"
    else echo "note: python3-torch missing; .pt import checks skipped"; fi
    $PY -c 'import numpy as np, sys; np.save(sys.argv[1], np.ones((3, 4, 5), "<f4"))' "$T/cube.npy"
    expect_rc 3 "$BIN" --import "$T/cube.npy" -c "$T/c3.txt" -o "$T/x.mpk.zst" && expect_one_error_line
    ls "$T"/x.mpk.zst* 2>/dev/null && fail "a failed import left output behind"
    PT=${FEDSM_SHARED_DATA:-../shared/data}/cifar100-clip-vit-b32-text.pt
    if [ -f "$PT" ]; then
        expect_rc 0 "$BIN" --import "$PT" -c data/cifar100-classes.txt -o "$T/clip100.mpk.zst"
        $PY - "$T/clip100.mpk.zst" "$PT" <<'PYEOF' || fail "real CLIP .pt import"
import sys, io, zipfile, msgpack, zstandard, numpy as np
raw = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"), read_across_frames=True).read()
e = list(msgpack.Unpacker(io.BytesIO(raw), raw=False))[0]
arr = lambda t: np.frombuffer(t["data"], dtype=t["type"]).reshape(t["shape"])
z = zipfile.ZipFile(sys.argv[2])  # the storage bytes themselves, without torch
x = np.frombuffer(z.read([n for n in z.namelist() if n.endswith("/data/0")][0]), "<f4").reshape(100, 512).astype(np.float64)
x /= np.linalg.norm(x, axis=1, keepdims=True)
S = arr(e["tensors"]["relevance"])
assert S.shape == (100, 100) and np.abs(S - x @ x.T).max() < 1e-6, np.abs(S - x @ x.T).max()
PYEOF
    else echo "note: $PT not found; real CLIP import skipped"; fi
else echo "note: $BIN not built; clip-embed checks skipped"; fi
done_tests

#!/usr/bin/env bash
# records_python.sh - interop with stock Python both ways: python3-msgpack + python3-zstandard
# decode what C wrote into NumPy arrays with the right values (every dtype, every meta type;
# also through the zstd CLI), and C reads what Python wrote (one-shot frames, streaming frames
# without a content size, msgpack-numpy bytes keys, no end record); inspect --json parses and
# inspect --tensor -o writes .npy files NumPy loads with the right values.
source tests/tools/lib.sh
H=${BUILD:-build}/helpers
G=tests/tools/gen.py

# C -> Python
$H/rec-gen --records 4 --client 3 "$T/c.mpk.zst" || fail "rec-gen"
$PY $G check "$T/c.mpk.zst" --records 4 || fail "python cannot read what C wrote"
n=$(zstd -q -dc "$T/c.mpk.zst" | $PY $G stdin-records)
[ "$n" = 5 ] || fail "zstd -dc | msgpack: $n maps, expected 5 (4 records + end)"
$H/rec-gen --records 2 --client 1 --level -1 - >"$T/pipe.mpk.zst" || fail "rec-gen to stdout"
$PY $G check "$T/pipe.mpk.zst" --records 2 || fail "python cannot read C's stdout stream"

# Python -> C
for mode in "" "--stream" "--bytes-keys" "--stream --bytes-keys" "--no-end"; do
    # shellcheck disable=SC2086
    $PY $G write "$T/p.mpk.zst" --records 3 $mode || fail "gen.py write $mode"
    expect_rc 0 $H/rec-check --records 3 "$T/p.mpk.zst" || fail "C cannot read python ($mode)"
    expect_rc 0 $H/rec-check --records 3 - <"$T/p.mpk.zst" || fail "C cannot read python on stdin ($mode)"
done
cat "$T/c.mpk.zst" "$T/p.mpk.zst" >"$T/cat.mpk.zst" # a C stream then a python one
expect_rc 0 $H/rec-check --records 7 "$T/cat.mpk.zst" || fail "cat of C and python streams"

# inspect --json: one object per record, values from the formulas
inspect --json "$T/c.mpk.zst" >"$T/json" || fail "inspect --json"
$PY - "$T/json" <<'PY' || fail "inspect --json output"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 4, len(recs)
for i, r in enumerate(recs):
    assert r["record"] == i and r["kind"] == "update" and r["meta"]["seq"] == i, r
    assert r["meta"]["nan"] is None and r["meta"]["utf8"] == "\u00fcn\u00ef\u20ac\U0001F600"
    t = {x["name"]: x for x in r["tensors"]}
    assert list(t) == ["f4", "f2", "i4", "i8", "u1", "s", "e"], list(t)
    assert t["i4"]["shape"] == [2, 3, 4] and t["i4"]["dtype"] == "<i4" and t["i4"]["bytes"] == 96
    assert t["s"]["shape"] == [] and t["s"]["min"] == 3000 + i + 0.5
    assert t["e"]["shape"] == [0, 3] and "min" not in t["e"]
    assert t["f2"]["min"] == ((3000 + i) % 2048) - 1024, t["f2"]
PY
inspect --meta "$T/c.mpk.zst" | grep -q '^  meta: {"client":3,"seq":0,' || fail "inspect --meta"
lines=$(inspect "$T/c.mpk.zst" | wc -l)
[ "$lines" = 32 ] || fail "inspect: $lines lines, expected 4 records x (1 + 7 tensors)"

# inspect --tensor: .npy files NumPy loads, every dtype, scalar and empty
for t in f4 f2 i4 i8 u1 s e; do
    expect_rc 0 inspect --tensor $t --record 2 -o "$T/$t.npy" "$T/c.mpk.zst" || continue
    $PY $G npy "$T/$t.npy" 3 2 $t || fail "npy of $t"
done
expect_rc 0 inspect --tensor u1 -o "$T/u1p.npy" "$T/p.mpk.zst" && $PY $G npy "$T/u1p.npy" 0 0 u1 \
    || fail "npy from the python stream"
ls "$T"/*.tmp.* 2>/dev/null && fail "temp files left"
done_tests

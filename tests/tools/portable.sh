# portable build: the kernel and CLIP unit tests rebuilt without AVX-512 (ARCH=-march=x86-64-v3,
# AVX2), so the fallback paths (OpenBLAS products, scalar exp/LayerNorm/attention, the scalar
# bf16 product) are checked on this machine too.  Separate build directory under $T.
. "$(dirname "$0")/lib.sh"
command -v make >/dev/null && command -v "${CC:-cc}" >/dev/null || skip "no make or C compiler"
cd "$FEDSM_ROOT"
P=$T/build
make -s -j2 BUILD="$P" ARCH=-march=x86-64-v3 SAN= "$P/tests/test_nn" "$P/tests/test_clip" >"$T/make.log" 2>&1 \
    || { sed 's/^/    /' "$T/make.log" | tail -20 >&2; fail "portable build"; done_tests; }
"$P/tests/test_nn" >"$T/nn.log" 2>&1 || { tail -20 "$T/nn.log" >&2; fail "test_nn without AVX-512"; }
grep -q 'bf16 products: scalar fallback' "$T/nn.log" || fail "the portable build still has AVX512-BF16"
"$P/tests/test_clip" >"$T/clip.log" 2>&1; rc=$?   # 77: a check needing ../shared/data skipped
[ $rc = 0 ] || [ $rc = 77 ] || { tail -20 "$T/clip.log" >&2; fail "test_clip without AVX-512"; }
tail -n1 "$T/nn.log" "$T/clip.log"
done_tests

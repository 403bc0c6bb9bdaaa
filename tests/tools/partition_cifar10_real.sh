#!/usr/bin/env bash
# partition on the real CIFAR-10 (all 60,000 JPEGs of $FEDSM_SHARED_DATA/cifar10-jpeg.tar.zst,
# default ../shared/data from the repository): IF 100, alpha 0.5, 20 clients.  Checks the
# published CIFAR-10-LT totals, equal client sizes, the 10,000-image test set, and that every
# sample is in exactly one client.  Skipped (and said so) when the archive is absent.
# The extraction (5 s on an idle machine, a minute under load; 236 MB) is cached outside the
# repository in ${XDG_CACHE_HOME:-~/.cache}/fedsm/cifar10-jpeg-<sha256 prefix>/ and reused.
. "$(dirname "$0")/lib.sh"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FEDSM_SHARED_DATA:-$REPO/../shared/data}
TAR=$DATA/cifar10-jpeg.tar.zst
[ -f "$TAR" ] || skip "no $TAR (set FEDSM_SHARED_DATA to the folder holding it)"
command -v zstd >/dev/null || skip "zstd not installed"
B=$(cd "${FEDSM_BIN:-build/bin}" 2>/dev/null && pwd) || skip "no build/bin"
H="$(dirname "$B")/helpers/partition_data"
[ -x "$B/partition" ] && [ -x "$H" ] || skip "partition not built"
SUM=$(sha256sum "$TAR" | cut -c1-16)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fedsm/cifar10-jpeg-$SUM
if [ ! -e "$CACHE/.complete" ]; then
    mkdir -p "$(dirname "$CACHE")" && rm -rf "$CACHE.tmp.$$" && mkdir "$CACHE.tmp.$$" &&
        zstd -dc --long=27 "$TAR" | tar x -C "$CACHE.tmp.$$" && touch "$CACHE.tmp.$$/.complete" &&
        rm -rf "$CACHE" && mv "$CACHE.tmp.$$" "$CACHE" ||
        { rm -rf "$CACHE.tmp.$$"; fail "cannot extract $TAR into $CACHE"; done_tests; }
fi
expect_rc 0 "$B/partition" --in "$CACHE" -o "$T/res" --if 100 --alpha 0.5 --clients 20 --threads 2 --name cifar10-jpeg
cat "$T/err"
tail -n1 "$T/res/partition.csv" | grep -q '^total,12406,10,5000,2997,1796,1077,645,387,232,139,83,50$' ||
    fail "totals: $(tail -n1 "$T/res/partition.csv")"
head -n1 "$T/res/partition.csv" | grep -q '^client,size,classes,airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck$' ||
    fail "class order: $(head -n1 "$T/res/partition.csv")"
sizes=$(sed '1d;$d' "$T/res/partition.csv" | cut -d, -f2 | sort | uniq -c | tr -s ' ' | tr '\n' ';')
[ "$sizes" = " 14 620; 6 621;" ] || fail "client sizes: $sizes"
"$H" check "$T/res" >"$T/chk" 2>&1 || fail "check: $(cat "$T/chk")"
grep -q '^test 10000$' "$T/chk" || fail "test set: $(cat "$T/chk")"
done_tests

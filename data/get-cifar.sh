#!/usr/bin/env bash
# data/get-cifar.sh - downloads CIFAR-10 or CIFAR-100 in the official binary layout and
# checks it.  usage: data/get-cifar.sh cifar10|cifar100 [DEST]   (DEST default: data/cache)
# CIFAR-10's files are checked by their git blob ids (the same in three unrelated public
# repositories; see ../shared/data/SOURCES.md); CIFAR-100's by the record structure and
# sizes (50,000 and 10,000 records of 3,074 bytes), as no independent digest was at hand.
# Offline: one clear error line, exit 4, nothing left behind.
set -euo pipefail
which=${1:-}
dest=${2:-$(cd "$(dirname "$0")" && pwd)/cache}
case $which in
cifar10) url=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz; dir=cifar-10-batches-bin ;;
cifar100) url=https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz; dir=cifar-100-binary ;;
-h|--help|"") echo "usage: get-cifar.sh cifar10|cifar100 [DEST]"; [ -n "$which" ]; exit $? ;;
*) echo "get-cifar: error: unknown dataset '$which' (cifar10 or cifar100)" >&2; exit 2 ;;
esac
mkdir -p "$dest"
tmp=$(mktemp -d "$dest/.get-cifar.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! curl -fsSL --retry 2 -o "$tmp/a.tar.gz" "$url" 2>"$tmp/err"; then
    echo "get-cifar: error: cannot download $url ($(tail -n1 "$tmp/err")); are you offline?" >&2
    exit 4
fi
tar -xzf "$tmp/a.tar.gz" -C "$tmp" || { echo "get-cifar: error: $url is not a valid tar.gz" >&2; exit 3; }
check() { # file want-blob-id
    local got; got=$(git hash-object "$tmp/$dir/$1")
    [ "$got" = "$2" ] || { echo "get-cifar: error: $1 has git blob $got, expected $2" >&2; exit 3; }
}
if [ "$which" = cifar10 ]; then
    check data_batch_1.bin da09f891072747be90e69e4f00ba7cba870dc87e
    check data_batch_2.bin 7e958840b7a55df3353574298ebc9ca0e4bba48e
    check data_batch_3.bin 5259a3e9674ffdf2d5c33a1067f7192ff06c9e2f
    check data_batch_4.bin 301e7d16d78428f13262e87a5bc78ed45b8224aa
    check data_batch_5.bin 51fe428dfbdd065852912743ae8b7b63bb1e9d8d
    check test_batch.bin e3f3b4653f18f27ada1558cabc3352a3ed1b25cc
    check batches.meta.txt cc82768074b9031bc26f480af98f94d9e9411bce
else
    [ "$(stat -c %s "$tmp/$dir/train.bin")" = 153700000 ] && [ "$(stat -c %s "$tmp/$dir/test.bin")" = 30740000 ] \
        || { echo "get-cifar: error: CIFAR-100 files have unexpected sizes" >&2; exit 3; }
fi
rm -rf "${dest:?}/$dir"
mv "$tmp/$dir" "$dest/$dir"
echo "$dest/$dir"

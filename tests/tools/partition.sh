#!/usr/bin/env bash
# partition: help/usage, long-tail totals at full CIFAR-10/100 sizes (generated CIFAR-format
# binaries), every split mode's invariants (checked by partition_data check: each sample in
# exactly one client, counts = partition record, labels and pixels = the source),
# determinism (byte-identical at 1 and 2 threads), image folders (JPEG + PNG), list files
# (decoded and encoded storage), and the bad-input matrix (one error line, exit 2/3, no
# output directory left).
. "$(dirname "$0")/lib.sh"
B=$(cd "${FEDSM_BIN:-build/bin}" 2>/dev/null && pwd) || skip "no build/bin"
P="$B/partition"
H="$(dirname "$B")/helpers/partition_data"
[ -x "$P" ] && [ -x "$H" ] || skip "partition or helpers/partition_data not built"
cd "$T"

# leaves nothing named res* behind (no partial or temporary output directory)
no_output() { local l; l=$(ls -d "$T"/res* 2>/dev/null); [ -z "$l" ] || { fail "left behind: $l"; rm -rf "$T"/res*; }; }
csv_total() { tail -n1 "$1/partition.csv"; }

# ---- help, version, usage ----
expect_rc 0 "$P" --help && grep -q -- '--split' "$T/out" || fail "--help"
expect_rc 0 "$P" --version && grep -q '^partition 0.1.0' "$T/out" || fail "--version"
expect_rc 2 "$P" -o res && expect_one_error_line
expect_rc 2 "$P" --in x && expect_one_error_line
expect_rc 2 "$P" --in x -o res --bogus && expect_one_error_line

# ---- CIFAR-10 at full size: the published long-tail totals ----
"$H" cifar10 c10 5000 1000 || fail "generate cifar10"
for spec in "100 12406,10,5000,2997,1796,1077,645,387,232,139,83,50" "50 13996" "10 20431" "1 50000"; do
    set -- $spec
    rm -rf res
    expect_rc 0 "$P" --in c10 -o res --if "$1" -q || continue
    csv_total res | grep -q "^total,$2" || fail "CIFAR-10 IF $1: $(csv_total res), want $2"
done
"$H" check res exact >/dev/null || fail "check cifar10 IF 1"
rm -rf res

# ---- CIFAR-100 at full size ----
"$H" cifar100 c100 500 100 || fail "generate cifar100"
for spec in "100 10847" "50 12608" "10 19573"; do
    set -- $spec
    rm -rf res
    expect_rc 0 "$P" --in c100 -o res --if "$1" -q || continue
    csv_total res | grep -q "^total,$2," || fail "CIFAR-100 IF $1: $(csv_total res | cut -c1-40), want $2"
done
"$H" check res exact >"$T/chk" || fail "check cifar100: $(cat "$T/chk")"
# IF 100 head 500, tail 5 (columns: total, size, classes, then class 0..99)
IFS=, read -r -a row < <(rm -rf res; "$P" --in c100 -o res -q && csv_total res)
[ "${row[3]:-}" = 500 ] && [ "${row[102]:-}" = 5 ] || fail "CIFAR-100 IF 100 head/tail ${row[3]:-}/${row[102]:-}"
rm -rf res c100

# ---- split modes on a small CIFAR-10 (500 per class) ----
"$H" cifar10 s10 500 50 || fail "generate small cifar10"
for split in creff dirichlet iid shards; do
    rm -rf res
    expect_rc 0 "$P" --in s10 -o res --if 10 --split $split --clients 20 -q || continue
    "$H" check res exact >"$T/chk" 2>&1 || fail "$split: $(cat "$T/chk")"
    n=$(csv_total res | cut -d, -f2)
    sizes=$(sed '1d;$d' res/partition.csv | cut -d, -f2 | sort -n | uniq | tr '\n' ' ')
    case $split in
    creff|iid) # equal contiguous slices: floor or ceil of N/K
        lo=$((n / 20)); hi=$(((n + 19) / 20))
        for s in $sizes; do [ "$s" = $lo ] || [ "$s" = $hi ] || fail "$split: size $s not $lo/$hi"; done ;;
    dirichlet)
        for s in $sizes; do [ "$s" -ge 10 ] || fail "dirichlet: client size $s < 10"; done ;;
    shards)
        mx=$(sed '1d;$d' res/partition.csv | cut -d, -f3 | sort -n | tail -1)
        [ "$mx" -le 2 ] || fail "shards: a client holds $mx classes > 2" ;;
    esac
done
rm -rf res
expect_rc 0 "$P" --in s10 -o res --split shards --classes-per-client 3 --clients 10 --if 1 -q &&
    [ "$(sed '1d;$d' res/partition.csv | cut -d, -f3 | sort -n | tail -1)" = 3 ] || fail "shards k=3"
rm -rf res
expect_rc 0 "$P" --in s10 -o res --profile step --if 10 -q &&
    csv_total res | grep -q '^total,2750,10,500,500,500,500,500,50,50,50,50,50$' || fail "step profile: $(csv_total res)"
rm -rf res

# ---- determinism: byte-identical outputs, at 1 and 2 threads ----
expect_rc 0 "$P" --in s10 -o resa -q --threads 1
expect_rc 0 "$P" --in s10 -o resb -q --threads 2
diff -r resa resb >/dev/null || fail "outputs differ between runs"
expect_rc 0 "$P" --in s10 -o resc -q --seed 8
cmp -s resa/client-00.mpk.zst resc/client-00.mpk.zst && fail "seed 8 gives the same split as seed 7"
rm -rf resa resb resc

# ---- image folder: JPEG + PNG, 32x32 -> decoded pixels ----
"$H" folder f 40 5 4 32 32 || fail "generate folder"
expect_rc 0 "$P" --in f -o res --if 4 --clients 5 -q --threads 2 &&
    "$H" check res >"$T/chk" 2>&1 || fail "folder: $(cat "$T/chk")"
grep -q '^test 20$' "$T/chk" || fail "folder test set: $(cat "$T/chk")"
head -1 res/partition.csv | grep -q '^client,size,classes,class00,class01,class02,class03$' || fail "folder classes"
rm -rf res
printf 'class03\nclass02\nclass01\nclass00\n' >order.txt
expect_rc 0 "$P" --in f -o res --classes order.txt --if 1 --clients 4 -q &&
    head -1 res/partition.csv | grep -q ',class03,class02,class01,class00$' || fail "--classes order"
rm -rf res
# 40x30 images: not small -> stored encoded (file bytes + offsets)
"$H" folder big 10 2 3 80 60 || fail "generate big folder"
expect_rc 0 "$P" --in big -o res --if 1 --clients 3 -q && "$H" check res >"$T/chk" 2>&1 || fail "encoded folder: $(cat "$T/chk")"
"$B/inspect" res/client-00.mpk.zst 2>/dev/null | grep -q 'offsets' || fail "encoded shard lacks offsets"
rm -rf res
expect_rc 0 "$P" --in big -o res --if 1 --clients 3 -q --store pixels &&
    "$B/inspect" res/client-00.mpk.zst 2>/dev/null | grep -q 'images' || fail "--store pixels"
rm -rf res big

# ---- list file (ImageNet-LT style) ----
"$H" list l 120 30 6 32 32 || fail "generate list"
expect_rc 0 "$P" --in l/train.txt --test-list l/test.txt --classes l/classes.txt -o res --if 5 --clients 4 -q &&
    "$H" check res >"$T/chk" 2>&1 || fail "list: $(cat "$T/chk")"
grep -q '^test 30$' "$T/chk" || fail "list test set"
head -1 res/partition.csv | grep -q ',name 0,name 1,' || fail "list class names"
rm -rf res
"$H" list lb 30 0 3 96 80 || fail "generate large list"
expect_rc 0 "$P" --in lb/train.txt --root lb -o res --if 1 --clients 3 -q &&
    "$H" check res >"$T/chk" 2>&1 || fail "encoded list: $(cat "$T/chk")"
[ -e res/test.mpk.zst ] && fail "test.mpk.zst without --test-list"
rm -rf res lb

# ---- --res-dir exists ----
mkdir res && touch res/keep
expect_rc 2 "$P" --in s10 -o res -q && expect_one_error_line
[ -e res/keep ] || fail "existing res-dir was touched"
expect_rc 0 "$P" --in s10 -o res -q --force && [ ! -e res/keep ] && [ -e res/partition.csv ] || fail "--force"
rm -rf res; mkdir res
expect_rc 0 "$P" --in s10 -o res -q || fail "empty res-dir should be reused"
rm -rf res

# ---- bad input: one error line, exit code, no output directory ----
bad() { # CODE ARGS...
    local code=$1; shift
    expect_rc "$code" "$P" -o res -q "$@" && expect_one_error_line
    grep -q '^partition: error: ' "$T/err" || fail "no 'partition: error:' line for $*"
    no_output
}
bad 4 --in nonexistent  # a missing input is I/O (4), as in every tool
bad 2 --in s10 --if 0.5
bad 2 --in s10 --if abc
bad 2 --in s10 --alpha 0
bad 2 --in s10 --alpha -1
bad 2 --in s10 --clients 0
bad 2 --in s10 --clients 5001 --if 1     # 5000 samples only
bad 2 --in s10 --split nope
bad 2 --in s10 --split shards --clients 3  # 3 x 2 < 10 classes
bad 2 --in s10 --split dirichlet --alpha 0.001 --min-size 200 --max-tries 5
bad 3 --in s10 --format cifar100
mkdir empty; bad 2 --in empty; rmdir empty

cp -r s10 m && rm m/data_batch_3.bin; bad 3 --in m; rm -rf m
cp -r s10 m && truncate -s -10 m/data_batch_2.bin; bad 3 --in m
grep -q 'data_batch_2.bin' "$T/err" || fail "short file not named"; rm -rf m
cp -r s10 m && : >m/test_batch.bin; bad 3 --in m; rm -rf m
cp -r s10 m && rm m/batches.meta.txt; bad 3 --in m; rm -rf m
cp -r s10 m && printf '\x0c' | dd of=m/data_batch_4.bin bs=1 seek=3073 conv=notrunc 2>/dev/null
bad 3 --in m; grep -q 'unknown label 12' "$T/err" || fail "unknown label message: $(cat "$T/err")"; rm -rf m

"$H" folder g 4 2 3 32 32 || fail "generate folder g"
cp -r g m && rm m/train/class01/*; bad 3 --in m; grep -q 'class01' "$T/err" || fail "empty class folder not named"; rm -rf m
cp -r g m && head -c 100 g/train/class02/0000.jpg >m/train/class02/0000.jpg; bad 3 --in m
grep -q 'class02/0000.jpg' "$T/err" || fail "corrupt JPEG not named: $(cat "$T/err")"; rm -rf m
cp -r g m && echo "not an image" >m/train/class00/0002.png; bad 3 --in m; rm -rf m
cp -r g m && mkdir m/train/zebra && cp g/train/class00/0000.jpg m/train/zebra/; bad 3 --in m --classes <(printf 'class00\nclass01\nclass02\n'); rm -rf m
bad 3 --in g --classes <(printf 'class00\nclass01\nclass02\nclass03\n')   # class03 folder missing

"$H" list l2 20 0 4 32 32 || fail "generate list l2"
printf 'img/n00000.jpg 9\n' >l2/bad1.txt; bad 3 --in l2/bad1.txt --classes l2/classes.txt
printf 'img/n00000.jpg\n' >l2/bad2.txt; bad 3 --in l2/bad2.txt
printf 'img/n00000.jpg x\n' >l2/bad3.txt; bad 3 --in l2/bad3.txt
printf 'img/missing.jpg 0\n' >l2/bad4.txt; bad 3 --in l2/bad4.txt
grep -q 'missing.jpg' "$T/err" || fail "missing image not named"
ls "$T" | grep -q '\.tmp\.' && fail "temporary files left: $(ls "$T")"
done_tests

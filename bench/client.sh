#!/usr/bin/env bash
# bench/client.sh - what one client pays per round, stage by stage, next to its local
# training (the methods' efficiency claim, docs/algorithms.md 3 and 5): wall time, CPU time
# and peak memory (RSS) of each tool a client runs in a retraining round, on the
# client with the most classes of a CIFAR-10-LT IF-100 partition (20 clients, alpha 0.5, seed 7):
#   local-train --epochs E           FedAvg's local training (E = 2, the reduced protocol;
#                                    the paper's 10 epochs cost 5 times as much)
#   local-train --prototypes         FedSM: per-class mean features (one eval-mode pass)
#   featgen --method fedsm           FedSM: 100 pseudo-features per class (its own pass over
#                                    the client's images, then the mix-up)
#   retrain --as-update              FedSM: a fresh head, 60 epochs, batch 256, lr 0.1
#   local-train --gradients          CReFF: per-class head gradients (10 repeats x 32, DSA)
# The weights are a fresh ResNet-8 (the cost does not depend on their values).  Data: the
# JPEG archive of ../shared/data when it is there, else gen-demo's synthetic 32x32 images
# (said in the output).  Not a test; no reference side (these are the tools' own stages;
# the PyTorch ratios of the steps inside them are bench/creff.sh and bench/head.sh).
# Env: BUILD (default build), FEDSM_SHARED_DATA, THREADS (default 1), EPOCHS (default 2).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
B=$PWD/$BUILD/bin
T=${THREADS:-1}
E=${EPOCHS:-2}
DATA=${FEDSM_SHARED_DATA:-$PWD/../shared/data}/cifar10-jpeg.tar.zst
for t in partition aggregate local-train featgen retrain gen-demo; do
    [ -x "$B/$t" ] || { echo "client: $B/$t not built (make all)"; exit 1; }
done
W=$(mktemp -d /tmp/fedsm-bench-client.XXXXXX)
trap 'rm -rf "$W"' EXIT
if [ -f "$DATA" ]; then
    mkdir -p "$W/in" && zstd -dc --long=27 "$DATA" | tar x -C "$W/in"
    src="real CIFAR-10 (JPEG archive)"
else
    "$B/gen-demo" "$W/in" 6000 1000 >/dev/null
    src="gen-demo synthetic 32x32 images (no $DATA)"
fi
"$B/partition" --in "$W/in" -o "$W/p" --if 100 --alpha 0.5 --clients 20 --seed 7 -q
"$B/aggregate" --init resnet8 --partition "$W/p/partition.mpk.zst" --seed 7 -o "$W/m.mpk.zst" -q
# the client holding the most classes (partition.csv: client,size,classes,...; CReFF's split
# gives every client the same size), the first of them
big=$(awk -F, 'NR > 1 && $1 != "total" && $3 + 0 > n { n = $3 + 0; c = $1 } END { printf "%02d", c }' "$W/p/partition.csv")
what=$(awk -F, -v c="$big" 'NR > 1 && $1 != "total" && $1 + 0 == c + 0 { print $2 " images, " $3 " classes" }' "$W/p/partition.csv")
echo "data: $src; client $big of 20 ($what); threads $T; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# global prototypes from every client (not timed: the server's input to featgen)
for f in "$W"/p/client-*.mpk.zst; do
    k=${f##*/client-}; k=${k%.mpk.zst}
    "$B/local-train" -m "$W/m.mpk.zst" -d "$f" --epochs 0 --seed 7 --threads 2 --prototypes "$W/proto-$k.mpk.zst" -q
done
"$B/aggregate" --prototypes -o "$W/protos.mpk.zst" "$W"/proto-*.mpk.zst -q
printf '%-44s | %8s %8s %9s\n' "stage (client $big)" wall_s cpu_s peak_MiB
stage() { # label, command...
    local label=$1; shift
    /usr/bin/time -f '%e %U %S %M' -o "$W/time" "$@" || { echo "client: $label failed"; exit 1; }
    read -r wall u s kb <"$W/time"
    awk -v l="$label" -v w="$wall" -v c="$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" -v k="$kb" \
        'BEGIN { printf "%-44s | %8.2f %8.2f %9.0f\n", l, w, c, k / 1024 }'
}
D=$W/p/client-$big.mpk.zst
stage "local-train, $E epochs (FedAvg's round)" "$B/local-train" -m "$W/m.mpk.zst" -d "$D" --epochs "$E" \
    --batch 32 --lr 0.1 --seed 7 --threads "$T" -o "$W/u.mpk.zst" -q
stage "FedSM: prototypes (local-train --prototypes)" "$B/local-train" -m "$W/m.mpk.zst" -d "$D" --epochs 0 \
    --seed 7 --threads "$T" --prototypes "$W/pr.mpk.zst" -q
stage "FedSM: pseudo-features (featgen, 100/class)" "$B/featgen" --method fedsm -m "$W/m.mpk.zst" -d "$D" \
    -P "$W/protos.mpk.zst" --select uniform --per-class 100 --round 1 --seed 7 --threads "$T" -o "$W/ps.mpk.zst" -q
stage "FedSM: head (retrain, 60 ep, batch 256)" "$B/retrain" --features "$W/ps.mpk.zst" -m "$W/m.mpk.zst" \
    --as-update --epochs 60 --batch 256 --lr 0.1 --round 1 --seed 7 --threads "$T" -o "$W/h.mpk.zst" -q
stage "CReFF: head gradients (10 x 32 per class)" "$B/local-train" -m "$W/m.mpk.zst" -d "$D" --epochs 0 \
    --seed 7 --threads "$T" --gradients "$W/g.mpk.zst" --grad-head "$W/m.mpk.zst" --grad-repeats 10 --grad-batch 32 -q
echo "FedSM's client extras in a retraining round = prototypes + pseudo-features + head; CReFF's = gradients."

#!/usr/bin/env bash
# pipelines/demo.sh - the main job on the embedded default (`make demo`): a small synthetic
# long-tailed 10-class dataset made by data/gen-demo (no download), FedAvg for a few rounds
# with a narrow ResNet-8, then FedSM on the same FedAvg body (fedsm.sh --body: exact, FedSM
# never feeds its heads back into training) with the relevance gen-demo writes for its
# classes, and both printed side by side.  `--data PATH` runs the same short protocol on a
# real dataset instead (e.g. ../shared/data/cifar10-jpeg.tar.zst; CIFAR-10 class names get
# WordNet relevance, anything else FedSM's uniform selection; DEMO_DATA in the environment
# does the same).
source "$(dirname "$0")/common.sh"
DATA=${DEMO_DATA:-} ROUNDS=${DEMO_ROUNDS:-8} RUN=${DEMO_RUN:-runs/demo}  # DEMO_DATA: what `make demo DATA=...` passes
while [ $# -gt 0 ]; do
    case $1 in
    --data) need_value "$@"; DATA=$2; shift ;;
    --rounds) need_value "$@"; ROUNDS=$2; shift ;;
    --run) need_value "$@"; RUN=$2; shift ;;
    -h|--help) echo "usage: demo.sh [--data PATH] [--rounds R] [--run DIR]"; exit 0 ;;
    *) die "unknown option '$1'" 2 ;;
    esac
    shift
done
need_bin gen-demo clip-embed
if [ -z "$DATA" ]; then
    DATA=$FEDSM_ROOT/${BUILD:-build}/demo-data
    if [ ! -f "$DATA/test_batch.bin" ] || [ "$BIN/gen-demo" -nt "$DATA/test_batch.bin" ]; then
        log "generating the demo dataset in $DATA"
        tmp_add "$DATA.tmp.$$"
        "$BIN/gen-demo" "$DATA.tmp.$$" 500 100 && rm -rf "$DATA" && mv "$DATA.tmp.$$" "$DATA"
    fi
    ARGS=(--if 10 --clients 10 --per-round 4 --epochs 3 --width 16)
    REL_SRC=(--import "$DATA/class_embeddings.npy" --classes "$DATA/batches.meta.txt")
    PLOT_TITLE="demo (synthetic, IF 10)"
else
    ARGS=(--if 100 --clients 20 --per-round 8 --epochs 1 --width 16)
    REL_SRC=()
    PLOT_TITLE="demo on $(basename "$DATA") (IF 100)"
fi
export PLOT_TITLE
t0=$SECONDS
"$(dirname "$0")/fedavg.sh" --data "$DATA" --run "$RUN" --rounds "$ROUNDS" --jobs 2 \
    --label fedavg "${ARGS[@]}" -q >/dev/null
t1=$SECONDS
SEL=(--select prob)
if [ ${#REL_SRC[@]} = 0 ]; then  # a real dataset: WordNet for CIFAR-10's names, else uniform
    if cmp -s <(tr -d '\r' <"$FEDSM_ROOT/data/cifar10-classes.txt") \
              <(head -n 1 "$RUN/partition/partition.csv" | tr ',' '\n' | tail -n +4); then
        REL_SRC=(--wordnet --classes "$FEDSM_ROOT/data/cifar10-classes.txt")
    else
        SEL=(--select uniform)
    fi
fi
REL=()
if [ ${#REL_SRC[@]} != 0 ]; then
    if [ ! -f "$RUN-fedsm.relevance.mpk.zst" ]; then
        "$BIN/clip-embed" "${REL_SRC[@]}" -o "$RUN-fedsm.relevance.mpk.zst" -q || exit $?
    fi
    REL=(--relevance "$RUN-fedsm.relevance.mpk.zst")
fi
PLOT_TITLE="$PLOT_TITLE, FedSM" "$(dirname "$0")/fedsm.sh" --data "$DATA" --run "$RUN-fedsm" \
    --body "$RUN" --rounds "$ROUNDS" --jobs 2 --label fedsm "${ARGS[@]}" "${REL[@]}" "${SEL[@]}" \
    --retrain-rounds "$((ROUNDS / 2))" -q >/dev/null
echo
echo "demo: FedAvg $RUN ($((t1 - t0)) s), FedSM $RUN-fedsm on the same body ($((SECONDS - t1)) s)"
echo "top-1 on the balanced test set (many/medium/few: classes with > 100 / 20-100 / < 20"
echo "training images); FedSM retrains its heads in the last $((ROUNDS / 2)) rounds"
printf '%6s | %7s %7s %7s | %7s %7s %7s\n' round fedavg many medium fedsm many medium
join -t, <(awk -F, 'NR>1 {print $2","$3","$5","$6}' "$RUN/metrics.csv" | sort -t, -k1,1) \
         <(awk -F, 'NR>1 {print $2","$3","$5","$6}' "$RUN-fedsm/metrics.csv" | sort -t, -k1,1) |
    sort -t, -k1,1n |
    awk -F, '{printf "%6s | %7.3f %7s %7s | %7.3f %7s %7s\n", $1, $2, ($3==""?"-":$3), ($4==""?"-":$4), $5, ($6==""?"-":$6), ($7==""?"-":$7)}'
[ ! -f "$RUN/accuracy.png" ] || echo "plots: $RUN/accuracy.png $RUN-fedsm/accuracy.png"
echo "partition picture: $RUN/partition/partition.svg"

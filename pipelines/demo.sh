#!/usr/bin/env bash
# pipelines/demo.sh - the main job on the embedded default (`make demo`): a small synthetic
# long-tailed 10-class dataset made by data/gen-demo (no download), FedAvg for a few rounds
# with a narrow ResNet-8, then FedSM on the same FedAvg body (fedsm.sh --body: exact, FedSM
# never feeds its heads back into training) with the relevance gen-demo writes for its
# classes, and both printed side by side.  `--data PATH` runs the same short protocol on a
# real dataset instead (e.g. ../shared/data/cifar10-jpeg.tar.zst; CIFAR-10 class names get
# WordNet relevance, anything else FedSM's uniform selection; DEMO_DATA in the environment
# does the same).  Each dataset gets its own run folders (runs/demo, runs/demo-NAME), so a
# demo on one never resumes the other's.
source "$(dirname "$0")/common.sh"
# DEMO_DATA, DEMO_RUN: what `make demo DATA=... RUN=...` passes
DATA=${DEMO_DATA:-} ROUNDS=${DEMO_ROUNDS:-8} RUN=${DEMO_RUN:-}
usage() {
    cat <<USAGE
usage: demo.sh [--data PATH] [--rounds R] [--run DIR]
FedAvg, then FedSM on the same FedAvg body, for a few rounds, printed side by side (what
\`make demo\` runs).  One line per round as it goes; about 6 minutes on 2 busy cores.
  --data PATH   a real dataset instead of the embedded synthetic one (anything fedavg.sh
                takes, e.g. ../shared/data/cifar10-jpeg.tar.zst): IF 100, 20 clients, 8 per
                round, 1 local epoch, width 16 (DEMO_DATA in the environment does the same)
  --rounds R    rounds (default 8; FedSM retrains its heads in the last R/2)
  --run DIR     FedAvg's run folder, FedSM's is DIR-fedsm (default runs/demo for the
                synthetic data, runs/demo-NAME for --data .../NAME[.tar.zst]; DEMO_RUN)
  -h, --help
A rerun resumes; a run folder made with other options is refused (fedavg.sh --force).
USAGE
}
while [ $# -gt 0 ]; do
    case $1 in
    --data) need_value "$@"; DATA=$2; shift ;;
    --rounds) need_value "$@"; ROUNDS=$2; shift ;;
    --run) need_value "$@"; RUN=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (try demo.sh --help)" 2 ;;
    esac
    shift
done
check_value --rounds int "$ROUNDS"
if [ -z "$RUN" ]; then
    if [ -z "$DATA" ]; then RUN=runs/demo
    else n=$(basename -- "$DATA"); n=${n%.tar.zst}; RUN="runs/demo-${n//[^A-Za-z0-9._-]/_}"
    fi
fi
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
else
    ARGS=(--if 100 --clients 20 --per-round 8 --epochs 1 --width 16)
    REL_SRC=()
fi
t0=$SECONDS
log "FedAvg, $ROUNDS rounds, into $RUN"
"$(dirname "$0")/fedavg.sh" --data "$DATA" --run "$RUN" --rounds "$ROUNDS" --jobs 2 \
    --label fedavg "${ARGS[@]}" --brief >/dev/null
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
log "FedSM on the same body, $ROUNDS rounds (retraining in the last $((ROUNDS / 2))), into $RUN-fedsm"
"$(dirname "$0")/fedsm.sh" --data "$DATA" --run "$RUN-fedsm" \
    --body "$RUN" --rounds "$ROUNDS" --jobs 2 --label fedsm "${ARGS[@]}" "${REL[@]}" "${SEL[@]}" \
    --retrain-rounds "$((ROUNDS / 2))" --brief >/dev/null
echo
echo "demo: FedAvg $RUN ($((t1 - t0)) s), FedSM $RUN-fedsm on the same body ($((SECONDS - t1)) s)"
echo "top-1 in % on the balanced test set (many/medium/few: classes with > 100 / 20-100 / < 20"
echo "training images; '-': no such class); FedSM retrains its heads in the last $((ROUNDS / 2)) rounds"
printf '%5s | %6s %6s %6s %6s | %6s %6s %6s %6s\n' round FedAvg many medium few FedSM many medium few
join -t, <(awk -F, 'NR>1 {print $2","$3","$5","$6","$7}' "$RUN/metrics.csv" | sort -t, -k1,1) \
         <(awk -F, 'NR>1 {print $2","$3","$5","$6","$7}' "$RUN-fedsm/metrics.csv" | sort -t, -k1,1) |
    sort -t, -k1,1n |
    awk -F, 'function p(x) { return x == "" ? "-" : sprintf("%.1f", 100 * x) }
        { printf "%5s | %6s %6s %6s %6s | %6s %6s %6s %6s\n", $1, p($2), p($3), p($4), p($5), p($6), p($7), p($8), p($9) }'
[ ! -f "$RUN/accuracy.png" ] || echo "plots: $RUN/accuracy.png $RUN-fedsm/accuracy.png (per class: class-accuracy.png)"
echo "partition picture: $RUN/partition/partition.svg"

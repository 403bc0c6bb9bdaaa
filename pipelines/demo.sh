#!/usr/bin/env bash
# pipelines/demo.sh - the main job on the embedded default (`make demo`): a small synthetic
# long-tailed 10-class dataset made by data/gen-demo (no download), FedAvg for a few rounds
# with a narrow ResNet-8, and a printed accuracy table.  `--data PATH` runs the same short
# protocol on a real dataset instead (e.g. ../shared/data/cifar10-jpeg.tar.zst).
source "$(dirname "$0")/common.sh"
DATA= ROUNDS=${DEMO_ROUNDS:-8} RUN=${DEMO_RUN:-runs/demo}
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
need_bin gen-demo
if [ -z "$DATA" ]; then
    DATA=$FEDSM_ROOT/${BUILD:-build}/demo-data
    if [ ! -f "$DATA/test_batch.bin" ] || [ "$BIN/gen-demo" -nt "$DATA/test_batch.bin" ]; then
        log "generating the demo dataset in $DATA"
        tmp_add "$DATA.tmp.$$"
        "$BIN/gen-demo" "$DATA.tmp.$$" 500 100 && rm -rf "$DATA" && mv "$DATA.tmp.$$" "$DATA"
    fi
    ARGS=(--if 10 --clients 10 --per-round 4 --epochs 3 --width 16)
    PLOT_TITLE="demo (synthetic, IF 10)"
else
    ARGS=(--if 100 --clients 20 --per-round 8 --epochs 1 --width 16)
    PLOT_TITLE="demo on $(basename "$DATA") (IF 100)"
fi
export PLOT_TITLE
t0=$SECONDS
"$(dirname "$0")/fedavg.sh" --data "$DATA" --run "$RUN" --rounds "$ROUNDS" --jobs 2 \
    --label demo "${ARGS[@]}" -q
echo
echo "FedAvg demo: $RUN ($((SECONDS - t0)) s)"
printf '%6s %8s %8s %8s %8s %8s\n' round top1 many medium few loss
awk -F, 'NR>1 {printf "%6s %8s %8s %8s %8s %8.4f\n", $2, $3, ($5==""?"-":$5), ($6==""?"-":$6), ($7==""?"-":$7), $4}' "$RUN/metrics.csv"
[ -f "$RUN/accuracy.png" ] && echo "plot: $RUN/accuracy.png"
echo "partition picture: $RUN/partition/partition.svg"

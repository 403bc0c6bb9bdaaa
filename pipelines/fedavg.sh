#!/usr/bin/env bash
# pipelines/fedavg.sh - FedAvg (ALGORITHMS 2): partition -> init -> R rounds of (seeded
# selection of K of N clients, local-train in parallel, aggregate, evaluate), one folder
# per round.  A killed run resumes at the first incomplete round and ends with the same
# model as an uninterrupted one (every random stream is keyed by seed, round and client).
source "$(dirname "$0")/common.sh"

usage() {
    cat <<USAGE
usage: fedavg.sh --data PATH [options]
FedAvg on a long-tailed, non-IID split of PATH (anything partition reads, or a .tar.zst
of an image folder, unpacked once into ~/.cache/fedsm).

  --data PATH        dataset (CIFAR binary folder, image folder, list file, .tar.zst)
  --test-list FILE   list files (ImageNet-LT): the test set's list (partition --test-list)
  --root DIR         list files: folder the listed paths are relative to (partition --root)
  --run DIR          run directory (default runs/fedavg); rerunning resumes it
  --if F             imbalance factor (default 100)       --alpha A   Dirichlet (0.5)
  --clients N        clients (default 20)                 --per-round K  clients per round (8)
  --rounds R         rounds (default 200)                 --epochs E  local epochs (10)
  --batch B          local batch (32)                     --lr LR     SGD lr (0.1)
  --arch A           resnet8 (default), cifar-resnet, resnet50
  --width W          first-stage channels (default: the arch's, 64)
  --proj D           projection dims before the classifier (default 0 = none)
  --seed S           seed (default 7)
  --jobs J           local-train processes at once (default 1)
  --threads T        threads per process (default 1)
  --aug MODE         batch | sample | none (default batch)
  --label NAME       label in metrics.csv (default fedavg)
  --eval-every N     evaluate every Nth round and each of the last 10 (default 1)
  --force            resume even if the options differ from the run's config.txt
  -q, --quiet        only errors and the final summary
  -h, --help
outputs: RUN/metrics.csv (label,round,top1,loss,many,medium,few,n), RUN/accuracy.png,
         RUN/round-RRR/model.mpk.zst
example: pipelines/fedavg.sh --data ../shared/data/cifar10-jpeg.tar.zst --if 100 \\
           --rounds 200 --jobs 2 --run runs/c10-if100
USAGE
}

DATA= RUN=runs/fedavg IF=100 ALPHA=0.5 CLIENTS=20 PER_ROUND=8 ROUNDS=200 EPOCHS=10 BATCH=32
LR=0.1 ARCH=resnet8 WIDTH= PROJ=0 TEST_LIST= ROOT= SEED=7 JOBS=1 THREADS=1 AUG=batch LABEL=fedavg FORCE=0 QUIET=0 EVAL_EVERY=1
while [ $# -gt 0 ]; do
    case $1 in
    --data) DATA=$2; shift ;;        --run) RUN=$2; shift ;;
    --test-list) TEST_LIST=$2; shift ;; --root) ROOT=$2; shift ;;
    --if) IF=$2; shift ;;            --alpha) ALPHA=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;  --per-round) PER_ROUND=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;    --epochs) EPOCHS=$2; shift ;;
    --batch) BATCH=$2; shift ;;      --lr) LR=$2; shift ;;
    --arch) ARCH=$2; shift ;;        --width) WIDTH=$2; shift ;;
    --proj) PROJ=$2; shift ;;        --seed) SEED=$2; shift ;;
    --jobs) JOBS=$2; shift ;;        --threads) THREADS=$2; shift ;;
    --aug) AUG=$2; shift ;;          --label) LABEL=$2; shift ;;
    --eval-every) EVAL_EVERY=$2; shift ;;
    --force) FORCE=1 ;;              -q|--quiet) QUIET=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fedavg: error: unknown option '$1'" >&2; echo "hint: try 'fedavg.sh --help'" >&2; exit 2 ;;
    esac
    [ $# -gt 0 ] && shift
done
[ -n "$DATA" ] || die "--data PATH is required (try --help)" 2
for v in IF ALPHA CLIENTS PER_ROUND ROUNDS EPOCHS BATCH LR SEED JOBS THREADS PROJ EVAL_EVERY; do check_num "--${v,,}" "${!v}"; done
[ "$PER_ROUND" -le "$CLIENTS" ] || die "--per-round $PER_ROUND is more than --clients $CLIENTS" 2
[ "$JOBS" -ge 1 ] || die "--jobs must be >= 1" 2
need_bin partition aggregate local-train evaluate
DATA=$(dataset_path "$DATA")
export FEDSM_THREADS=$THREADS QUIET PLOT_TITLE=${PLOT_TITLE:-$LABEL}

lock_run "$RUN"
write_config "$RUN" method=fedavg data="$DATA" if="$IF" alpha="$ALPHA" clients="$CLIENTS" \
    per_round="$PER_ROUND" epochs="$EPOCHS" batch="$BATCH" lr="$LR" arch="$ARCH" \
    width="$WIDTH" proj="$PROJ" seed="$SEED" aug="$AUG" \
    ${TEST_LIST:+test_list="$TEST_LIST"} ${ROOT:+root="$ROOT"}
run_partition "$RUN" "$DATA" --if "$IF" --alpha "$ALPHA" --clients "$CLIENTS" --seed "$SEED" \
    --threads "$JOBS" ${TEST_LIST:+--test-list "$TEST_LIST"} ${ROOT:+--root "$ROOT"} $( [ "$QUIET" = 1 ] && echo -q )
P=$RUN/partition
Q=$( [ "$QUIET" = 1 ] && echo -q || true )

mkdir -p "$RUN/round-000"
if [ ! -f "$RUN/round-000/model.mpk.zst" ]; then
    "$BIN/aggregate" --init "$ARCH" --partition "$P/partition.mpk.zst" --proj "$PROJ" ${WIDTH:+--width "$WIDTH"} \
        --seed "$SEED" -o "$RUN/round-000/model.mpk.zst" $Q
fi

for ((r = 1; r <= ROUNDS; r++)); do
    R=$(printf '%s/round-%03d' "$RUN" "$r")
    PREV=$(printf '%s/round-%03d' "$RUN" $((r - 1)))
    eval_this=0
    if [ $((r % EVAL_EVERY)) = 0 ] || [ "$r" -gt $((ROUNDS - 10)) ]; then eval_this=1; fi
    if [ -f "$R/model.mpk.zst" ] && { [ -f "$R/metrics.csv" ] || [ $eval_this = 0 ]; }; then continue; fi
    mkdir -p "$R"
    t0=$SECONDS
    sel=$("$BIN/aggregate" --select "$PER_ROUND" --clients "$CLIENTS" --round "$r" --seed "$SEED")
    : > "$R/jobs.txt"
    for k in $sel; do
        kk=$(printf '%02d' "$k")
        [ -f "$R/update-$kk.mpk.zst" ] && continue
        echo "'$BIN/local-train' -m '$PREV/model.mpk.zst' -d '$P/client-$kk.mpk.zst' --epochs $EPOCHS --batch $BATCH --lr $LR --aug $AUG --seed $SEED --threads $THREADS -o '$R/update-$kk.mpk.zst' $Q" >> "$R/jobs.txt"
    done
    parallel_run "$JOBS" "$R/jobs.txt" || die "local training failed in round $r" 1
    ups=(); for k in $sel; do ups+=("$R/update-$(printf '%02d' "$k").mpk.zst"); done
    [ -f "$R/model.mpk.zst" ] || "$BIN/aggregate" -m "$PREV/model.mpk.zst" -o "$R/model.mpk.zst" $Q "${ups[@]}"
    rm -f "$R/jobs.txt"
    if [ $eval_this = 0 ]; then log "round $r/$ROUNDS done in $((SECONDS - t0)) s (not evaluated)"; continue; fi
    rm -f "$R/metrics.csv.tmp" "$R/metrics.json.tmp"
    "$BIN/evaluate" -m "$R/model.mpk.zst" --test "$P/test.mpk.zst" -p "$P/partition.mpk.zst" \
        --label "$LABEL" --csv "$R/metrics.csv.tmp" --json "$R/metrics.json.tmp" --threads "$((JOBS * THREADS))" $Q
    mv "$R/metrics.json.tmp" "$R/metrics.json"; mv "$R/metrics.csv.tmp" "$R/metrics.csv"
    collect_metrics "$RUN"
    log "round $r/$ROUNDS done in $((SECONDS - t0)) s: $(tail -n 1 "$RUN/metrics.csv")"
done
collect_metrics "$RUN"
echo "$LABEL: $(summary "$RUN")"

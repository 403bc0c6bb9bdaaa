#!/usr/bin/env bash
# pipelines/cifar10-lt-fedavg.sh - FedAvg on real CIFAR-10-LT at IF 100, 50 and 10 (20
# clients, 8 per round, Dirichlet 0.5, ResNet-8), then the results table.
# Default: the reduced protocol of the README (fewer rounds and local epochs, every
# other setting as the paper).  --full runs the paper's protocol (200 rounds x 10 epochs:
# a GPU-class job, days on 2 CPU cores).
# usage: cifar10-lt-fedavg.sh [--data PATH] [--full] [--rounds R] [--epochs E] [--jobs J]
#                             [--eval-every N] [--runs DIR]
source "$(dirname "$0")/common.sh"
DATA=${FEDSM_SHARED_DATA:-$FEDSM_ROOT/../shared/data}/cifar10-jpeg.tar.zst
ROUNDS=30 EPOCHS=1 JOBS=2 RUNS=runs EVAL_EVERY=5
while [ $# -gt 0 ]; do
    case $1 in
    --data|--rounds|--epochs|--jobs|--runs|--eval-every) need_value "$@" ;;
    esac
    case $1 in
    --data) DATA=$2; shift ;;  --rounds) ROUNDS=$2; shift ;;  --epochs) EPOCHS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;  --runs) RUNS=$2; shift ;;      --eval-every) EVAL_EVERY=$2; shift ;;
    --full) ROUNDS=200 EPOCHS=10 EVAL_EVERY=1 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1'" 2 ;;
    esac
    shift
done
# checked here, once, rather than by the first of the three fedavg.sh runs
check_value --rounds int "$ROUNDS"; check_value --epochs int "$EPOCHS"
check_value --jobs int "$JOBS"; check_value --eval-every int "$EVAL_EVERY"
runs=()
for IF in 100 50 10; do
    run="$RUNS/c10-if$IF-r$ROUNDS-e$EPOCHS"
    "$(dirname "$0")/fedavg.sh" --data "$DATA" --if "$IF" --alpha 0.5 --clients 20 --per-round 8 \
        --rounds "$ROUNDS" --epochs "$EPOCHS" --batch 32 --lr 0.1 --jobs "$JOBS" \
        --eval-every "$EVAL_EVERY" --label "fedavg-if$IF" --run "$run"
    runs+=("$run")
done
"$(dirname "$0")/table.sh" "${runs[@]}"

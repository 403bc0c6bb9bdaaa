#!/usr/bin/env bash
# pipelines/cifar10-lt-fedavg.sh - FedAvg on real CIFAR-10-LT at IF 100, 50 and 10 (20
# clients, 8 per round, the CReFF split with Dirichlet 0.5, ResNet-8), then the results
# table.  Default: the README's reduced protocol ("The methods on real data": 15 rounds x 2
# local epochs, evaluated every 5th round and each of the last 10, seed 7); --full runs the
# paper's (200 rounds x 10 epochs: a GPU-class job, days on 2 CPU cores).
source "$(dirname "$0")/common.sh"
usage() {
    cat <<USAGE
usage: cifar10-lt-fedavg.sh [--data PATH] [--full] [--rounds R] [--epochs E] [--jobs J]
                            [--eval-every N] [--runs DIR]
FedAvg on CIFAR-10-LT at IF 100, 50 and 10 (20 clients, 8 per round, Dirichlet 0.5,
ResNet-8, lr 0.1, batch 32, seed 7), one run folder each, then table.sh of the three.
Default: the README's reduced protocol, 15 rounds x 2 local epochs, evaluated every 5th
round and each of the last 10.
  --data PATH      CIFAR-10 (default \${FEDSM_SHARED_DATA:-../shared/data}/cifar10-jpeg.tar.zst)
  --full           the paper's protocol: 200 rounds x 10 epochs, every round evaluated
  --rounds R, --epochs E, --eval-every N   override the protocol's
  --jobs J         local-train processes at once (default 2)
  --runs DIR       where the run folders go (default runs): DIR/c10-ifF-rR-eE
  -h, --help
A rerun resumes every run where it stopped.
USAGE
}
DATA=${FEDSM_SHARED_DATA:-$FEDSM_ROOT/../shared/data}/cifar10-jpeg.tar.zst
ROUNDS=15 EPOCHS=2 JOBS=2 RUNS=runs EVAL_EVERY=5
while [ $# -gt 0 ]; do
    case $1 in
    --data|--rounds|--epochs|--jobs|--runs|--eval-every) need_value "$@" ;;
    esac
    case $1 in
    --data) DATA=$2; shift ;;  --rounds) ROUNDS=$2; shift ;;  --epochs) EPOCHS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;  --runs) RUNS=$2; shift ;;      --eval-every) EVAL_EVERY=$2; shift ;;
    --full) ROUNDS=200 EPOCHS=10 EVAL_EVERY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (try cifar10-lt-fedavg.sh --help)" 2 ;;
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
        --rounds "$ROUNDS" --epochs "$EPOCHS" --batch 32 --lr 0.1 --seed 7 --jobs "$JOBS" \
        --eval-every "$EVAL_EVERY" --label "fedavg-if$IF" --run "$run"
    runs+=("$run")
done
"$(dirname "$0")/table.sh" "${runs[@]}"

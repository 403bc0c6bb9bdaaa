#!/usr/bin/env bash
# pipelines/fedavg.sh - FedAvg (docs/algorithms.md, FedAvg): partition -> init -> R rounds of
# (seeded selection of K of N clients, local-train in parallel, aggregate, evaluate), one
# folder per round.  A killed run resumes at the first incomplete round and ends with the
# same model as an uninterrupted one (every random stream is keyed by seed, round and client).
# The round's stages are pipelines/common.sh's functions; the other methods reuse them.
source "$(dirname "$0")/common.sh"

method_usage() {
    cat <<USAGE
usage: fedavg.sh --data PATH [options]
FedAvg on a long-tailed, non-IID split of PATH (anything partition reads, or a .tar.zst
of an image folder, unpacked once into ~/.cache/fedsm).
fedavg.sh's own option:
  --aggregate-cmd PROG  your aggregation rule in place of aggregate: run each round as
                     PROG -m PREV_MODEL -o OUT UPDATE... (PROG an executable file, or a
                     program in PATH; its arguments are never passed through a shell); OUT
                     must be one model record of the round with PREV_MODEL's tensors.
                     Example: python/examples/median_aggregate.py (docs/plugins.md)
USAGE
}
method_usage_tail() {
    cat <<USAGE
outputs: RUN/metrics.csv (label,round,top1,loss,many,medium,few,n), RUN/accuracy.png,
         RUN/class-accuracy.{csv,png} (each class's top-1 per round), RUN/round-RRR/model.mpk.zst
example: pipelines/fedavg.sh --data ../shared/data/cifar10-jpeg.tar.zst --if 100 \\
           --rounds 200 --jobs 2 --run runs/c10-if100
USAGE
}

METHOD_OPTS+=("--aggregate-cmd AGGREGATE_CMD path"); AGGREGATE_CMD=
parse_options "$@"
if [ -n "$AGGREGATE_CMD" ]; then check_cmd --aggregate-cmd "$AGGREGATE_CMD"; AGGREGATE_CMD=$CMD_PATH; fi
setup_run ${AGGREGATE_CMD:+aggregate_cmd="$AGGREGATE_CMD"}
for ((r = 1; r <= ROUNDS; r++)); do
    round_start "$r" || continue
    select_clients "$r"
    train_clients "$R" "$PREV/model.mpk.zst"
    fedavg_round "$R" "$PREV/model.mpk.zst"
    round_end "$R" "$R/model.mpk.zst"
done
finish_run

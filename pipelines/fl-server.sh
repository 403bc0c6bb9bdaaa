#!/usr/bin/env bash
# pipelines/fl-server.sh - FedAvg with the clients on other hosts (README "Federated across
# machines"): init -> R rounds of (fl-server: pick K of the clients present, send them the
# global model, collect their updates until the deadline; aggregate; evaluate), one folder
# per round as fedavg.sh's.  The clients run pipelines/fl-client.sh on their own shards.
# Rerunning the same command resumes a killed server at the round it was in (the picked
# clients and the updates already received are kept; the clients reconnect by themselves).
# With every picked client answering, the run ends with the same model, byte for byte, as
# fedavg.sh with the same options on the same partition.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/federated.sh"
METHOD=fedavg LABEL=fedavg-fl

method_usage() {
    cat <<USAGE
usage: fl-server.sh --data PARTITION_DIR (--key SERVER.key --enrolled DIR | --insecure) [options]
FedAvg over clients on other hosts: the server holds the global model, the partition record
and the test set; each client keeps its shard and trains on it (pipelines/fl-client.sh).
USAGE
}
method_usage_tail() {
    fl_usage
    cat <<USAGE
(--data names a partition folder here; --jobs does not apply: the clients train.)
outputs: RUN/metrics.csv, RUN/accuracy.png, RUN/system.csv (label,round,client,status,
         bytes_to_client,bytes_from_client,train_s,reply_s,num_samples; status answered,
         missed, dropped, refused or failed), RUN/round-RRR/model.mpk.zst
example: pipelines/fl-server.sh --data parts/c10-if100 --key keys/server.key \\
           --enrolled keys/enrolled --bind 'tcp://*:5555' --rounds 200 --run runs/fl-c10
USAGE
}

fl_options
parse_options "$@"
fl_check_options
[ -z "$HOSTS" ] || die "--hosts does not apply here: each client trains on its own host (fl-client.sh)" 2
fl_setup
for ((r = 1; r <= ROUNDS; r++)); do
    round_start "$r" || continue
    fl_collect "$R" "$PREV/model.mpk.zst"
    fedavg_round "$R" "$PREV/model.mpk.zst"
    round_end "$R" "$R/model.mpk.zst"
done
fl_finish
finish_run

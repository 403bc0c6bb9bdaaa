# pipelines/federated.sh - the server side of federated rounds across hosts (sourced after
# common.sh, not run).  The round's collection is fl-server's (one process per round, the
# round folder its state); averaging and evaluation are common.sh's, so a federated round
# leaves the folder a file-pipeline round leaves, plus:
#   RUN/round-RRR/selected.txt       the picked clients (fixed once chosen; a resume keeps them)
#   RUN/round-RRR/answered.txt       the clients whose updates were accepted (collection over)
#   RUN/round-RRR/system.csv         one row per picked client (status, bytes, times)
#   RUN/system.csv                   every round's rows, beside RUN/metrics.csv
# A method's federated script (pipelines/fl-server.sh is FedAvg's) is:
#   source common.sh; source federated.sh
#   fl_options                          # the network options, before parse_options
#   parse_options "$@"; fl_check_options
#   fl_setup [KEY=VALUE...]             # the server's partition folder, then setup_run
#   for each round: round_start; fl_collect R MODEL; fedavg_round ...; (its stages); round_end
#   fl_finish; finish_run
# The methods' extra records would ride on fl_collect (tasks carrying more files, results
# more outputs: docs/format.md "Federated messages"); only FedAvg's exist today.

# fl_options: the network options (METHOD_OPTS entries and their defaults).
fl_options() {
    METHOD_OPTS+=(
        "--bind BIND str"               "--key KEY path"
        "--enrolled ENROLLED path"      "--insecure INSECURE flag"
        "--min-clients MIN_CLIENTS int" "--wait WAIT num"           "--grace GRACE num"
        "--deadline DEADLINE num"       "--dropout DROPOUT num"
        "--max-msg MAX_MSG int"         "--keep-clients KEEP_CLIENTS flag"
    )
    BIND='tcp://*:5555' KEY= ENROLLED= INSECURE=0 MIN_CLIENTS= WAIT=60 GRACE=5 DEADLINE=600 DROPOUT=10
    MAX_MSG= KEEP_CLIENTS=0
}

# fl_usage: the network options' help lines.
fl_usage() {
    cat <<USAGE
network options (the clients run pipelines/fl-client.sh on their own hosts):
  --data DIR         the partition folder: partition.mpk.zst (class names, normalisation,
                     per-class training counts) and test.mpk.zst; the clients' shards stay
                     on the clients and need not be here
  --bind ADDR        where clients connect (default tcp://*:5555; open that TCP port)
  --key FILE         the server's secret key (fl-keygen -o server): CURVE encryption, and
  --enrolled DIR     only the keys in DIR/client-K.pub may join (client K)
  --insecure         no keys, no encryption: a trusted network or loopback only
  --min-clients M    fewest updates that make a round (default half of --per-round, rounded
                     up); fewer: the round fails (exit 1), a rerun resumes and retries it
  --wait SEC         wait this long for the clients the seeded pick wants (default 60);
  --grace SEC        once --per-round clients are present, this long at most (default 5)
  --deadline SEC     the picked clients' time to answer (default 600)
  --dropout SEC      a picked client silent this long is dropped, not waited for (default 10)
  --max-msg BYTES    largest message taken from a client (default 64 GiB)
  --keep-clients     do not tell the clients to exit when the run is over
USAGE
}

# fl_check_options: after parse_options: one way of securing the socket, sane times.
fl_check_options() {
    if [ "$INSECURE" = 1 ]; then
        [ -z "$KEY$ENROLLED" ] || die "--insecure turns encryption off: give it without --key and --enrolled" 2
        FL_SECURITY=(--insecure)
    else
        [ -n "$KEY" ] && [ -n "$ENROLLED" ] || die "give --key SERVER.key and --enrolled DIR (CURVE), or --insecure (try $PROG.sh --help)" 2
        FL_SECURITY=(--key "$KEY" --enrolled "$ENROLLED")
    fi
    [[ $BIND == tcp://* || $BIND == ipc://* ]] || die "--bind '$BIND' is not tcp://HOST:PORT or ipc://PATH" 2
    [ -z "$MIN_CLIENTS" ] || in_range --min-clients "$MIN_CLIENTS" 1 "$PER_ROUND"
    in_range --wait "$WAIT" 0 1e7
    in_range --grace "$GRACE" 0 1e7
    in_range --deadline "$DEADLINE" 0 1e7
    in_range --dropout "$DROPOUT" 0.1 1e7
    [ -z "$MAX_MSG" ] || in_range --max-msg "$MAX_MSG" 1024 9.2e18
}

# fl_setup [KEY=VALUE...]: setup_run (config.txt with federated=1 and the KEY=VALUEs, the
# partition, round 0's model), where the partition is DATA's (a partition folder: its
# partition record and test shard are linked into RUN/partition by method_check_run, under
# the run's lock, so nothing is partitioned here).
fl_setup() {
    need_bin fl-server
    [ -f "$DATA/partition.mpk.zst" ] && [ -f "$DATA/test.mpk.zst" ] ||
        die "--data $DATA is not a partition folder (partition.mpk.zst and test.mpk.zst)" 4
    setup_run federated=1 "$@"
}

# fl_link_partition: links (or copies) DATA's partition record, test shard, CSV and picture
# into RUN/partition; setup_run calls it through method_check_run.  A federated method
# script that defines its own method_check_run calls it there.
fl_link_partition() {
    mkdir -p "$RUN/partition" || die "cannot create $RUN/partition" 4
    local f
    for f in partition.mpk.zst test.mpk.zst partition.csv partition.svg; do
        [ -f "$DATA/$f" ] && [ ! -e "$RUN/partition/$f" ] || continue
        ln -f "$DATA/$f" "$RUN/partition/" 2>/dev/null || cp "$DATA/$f" "$RUN/partition/" || die "cannot copy $DATA/$f" 4
    done
}
method_check_run() { fl_link_partition; }

# fl_collect R MODEL: round R's collection by fl-server (skipped when R/answered.txt says it is
# over); sets SELECTED to the clients whose updates are in R (fedavg_round averages them) and
# rebuilds RUN/system.csv.  Exits with fl-server's status when the round cannot be made.
fl_collect() {
    local r=$1 model=$2
    if [ ! -f "$r/answered.txt" ]; then
        local cmd=("$BIN/fl-server" --bind "$BIND" "${FL_SECURITY[@]}" -m "$model" --dir "$r"
                   --clients "$CLIENTS" --per-round "$PER_ROUND" --seed "$SEED" --label "$LABEL"
                   --wait "$WAIT" --grace "$GRACE" --deadline "$DEADLINE" --dropout "$DROPOUT"
                   --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --aug "$AUG" --threads "$THREADS")
        [ -z "$MIN_CLIENTS" ] || cmd+=(--min-clients "$MIN_CLIENTS")
        [ -z "$MAX_MSG" ] || cmd+=(--max-msg "$MAX_MSG")
        [ -z "$MOMENTUM" ] || cmd+=(--momentum "$MOMENTUM")
        [ -z "$WD" ] || cmd+=(--wd "$WD")
        run_tool "${cmd[@]}" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    mapfile -t SELECTED <"$r/answered.txt"
    local k
    for k in "${SELECTED[@]}"; do [[ $k =~ ^[0-9]+$ ]] || die "$r/answered.txt holds '$k'" 3; done
    [ ${#SELECTED[@]} -gt 0 ] || die "$r/answered.txt names no client" 3
    fl_system_metrics
}

# fl_system_metrics: RUN/system.csv from the rounds' system.csv files.
fl_system_metrics() {
    local first=1 f
    tmp_add "$RUN/system.csv.tmp"
    : >"$RUN/system.csv.tmp"
    for f in "$RUN"/round-*/system.csv; do
        [ -f "$f" ] || continue
        if [ $first = 1 ]; then cat "$f"; first=0; else tail -n +2 "$f"; fi
    done >>"$RUN/system.csv.tmp"
    mv "$RUN/system.csv.tmp" "$RUN/system.csv"
}

# fl_finish: unless --keep-clients, tells the clients heard within a few seconds to exit.
fl_finish() {
    fl_system_metrics
    [ "$KEEP_CLIENTS" = 1 ] && return 0
    run_tool "$BIN/fl-server" --stop --bind "$BIND" "${FL_SECURITY[@]}" --clients "$CLIENTS" \
        --wait "$(awk -v d="$DROPOUT" 'BEGIN { print (d < 5 ? d : 5) }')" ${QOPT[@]+"${QOPT[@]}"} ||
        log "could not tell the clients to stop (they keep waiting; stop them by hand)"
}

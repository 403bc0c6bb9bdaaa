#!/usr/bin/env bash
# pipelines/fedsm.sh - FedSM (docs/algorithms.md 5): FedAvg rounds (with CLIP distillation on
# the clients when teacher logits are given); in the last --retrain-rounds rounds, after
# FedAvg, every client computes its per-class feature means with the new global model
# (local-train --prototypes), the server averages them into global prototypes (aggregate
# --prototypes), each selected client mixes local features drawn by semantic relevance with
# the prototypes into balanced pseudo-features (featgen --method fedsm) and retrains a fresh
# head on them (retrain), and the server averages the heads by client sample count
# (aggregate --heads).  Everything FedSM adds runs on the clients; the server only averages.
# The evaluated model of a retraining round is the FedAvg body with the averaged head; the
# next round starts from the FedAvg model (5.4 step 7).
source "$(dirname "$0")/common.sh"

METHOD=fedsm
METHOD_OPTS+=(
    "--relevance REL path" "--select SELECT enum:prob,det,uniform" "--temp TEMP num"
    "--per-class PER_CLASS int" "--retrain-rounds RETRAIN_ROUNDS int"
    "--head-epochs HEAD_EPOCHS int" "--head-batch HEAD_BATCH int" "--head-lr HEAD_LR num"
    "--proto-bn PROTO_BN enum:eval,train" "--teacher TEACHER path" "--body BODY path"
)
REL= SELECT=prob TEMP=0 PER_CLASS=100 RETRAIN_ROUNDS=90 HEAD_EPOCHS=60 HEAD_BATCH=256 HEAD_LR=0.1
PROTO_BN=eval TEACHER= BODY=

method_usage() {
    cat <<USAGE
usage: fedsm.sh --data PATH --relevance REL [options]
FedSM (docs/algorithms.md 5): semantic-guided pseudo-features and client-side classifier
retraining on top of FedAvg.
fedsm options:
  --relevance REL      class relevance: an embeddings record (clip-embed: CLIP text
                       embeddings, --import of any class embeddings (.npy, .pt), or
                       --wordnet); its diagonal is replaced by the row mean.  Not needed
                       with --select uniform
  --select MODE        prob (default: draw local features with probability proportional
                       to their class's relevance), det (most relevant first), uniform
  --temp T             prob with softmax(S/T) weights instead of S (default 0: off)
  --per-class M        pseudo-features per class and client (default 100)
  --retrain-rounds N   retrain in the last N rounds (default 90, the reference's 90 of 200)
  --head-epochs E      head retraining epochs (default 60)  --head-batch B (256)
  --head-lr LR         head retraining lr (default 0.1; the reference code's 0.01 barely
                       moves the head in 240 steps, see the README's "FedSM's head retraining" table)
  --proto-bn MODE      BatchNorm during prototype extraction: eval (default) or train (the
                       reference code's)
  --teacher CLIP       clip-embed output with teacher logits of every client shard: client
                       distillation (kd alpha 1, T 3).  Without it FedSM runs without a
                       teacher and says so
  --body FEDAVG_RUN    take each round's FedAvg model (and prototypes, when that run has
                       them with the same --proto-bn) from an earlier run with the same
                       data, split, model and training options (exact without a teacher)
USAGE
}
method_usage_tail() {
    cat <<USAGE
outputs: RUN/metrics.csv (FedAvg model, or its body with the averaged retrained head in
         retraining rounds), RUN/accuracy.png, RUN/class-accuracy.{csv,png},
         RUN/round-RRR/{model,prototypes,retrained}.mpk.zst
example: pipelines/fedsm.sh --data ../shared/data/cifar10-jpeg.tar.zst --if 100 \\
           --relevance rel.mpk.zst --rounds 200 --jobs 2 --run runs/fedsm-c10-if100
USAGE
}

parse_options "$@"
in_range --per-class "$PER_CLASS" 1 100000
in_range --head-batch "$HEAD_BATCH" 1 1048576
[ "$SELECT" = uniform ] || [ -n "$REL" ] ||
    die "--select $SELECT needs --relevance (clip-embed -w W ..., clip-embed --import E.pt, or clip-embed --wordnet)" 2
[ -z "$REL" ] || [ -f "$REL" ] || die "relevance $REL does not exist" 4
[ -z "$TEACHER" ] || [ -f "$TEACHER" ] || die "teacher $TEACHER does not exist" 4
[ -z "$BODY" ] || [ -f "$BODY/config.txt" ] || die "--body $BODY is not a run directory (no config.txt)" 4
need_bin featgen retrain
keys=(select="$SELECT" temp="$TEMP" per_class="$PER_CLASS" retrain_rounds="$RETRAIN_ROUNDS"
      head_epochs="$HEAD_EPOCHS" head_batch="$HEAD_BATCH" head_lr="$HEAD_LR" proto_bn="$PROTO_BN")
[ -z "$REL" ] || keys+=(relevance="$(sha256sum <"$REL" | cut -c1-16)")
[ -z "$TEACHER" ] || keys+=(teacher="$(sha256sum <"$TEACHER" | cut -c1-16)")
# method_check_run (called by setup_run): the rounds that retrain follow from --rounds and
# --retrain-rounds, which may change on a resume (config.txt holds neither --rounds nor, for
# that reason, a schedule).  A round done under another schedule would keep metrics of the
# other kind (a retrained head where this run evaluates the FedAvg model, or the reverse):
# refused, or with --force started afresh.
method_check_run() {
    local d r first=$((ROUNDS - RETRAIN_ROUNDS + 1))
    for d in "$RUN"/round-[0-9][0-9][0-9]; do
        [ -d "$d" ] || continue
        r=$((10#${d##*round-}))
        [ "$r" -ge 1 ] && [ "$r" -le "$ROUNDS" ] || continue
        if { [ -f "$d/retrained.mpk.zst" ] && [ "$r" -lt "$first" ]; } ||
           { [ ! -f "$d/retrained.mpk.zst" ] && [ -f "$d/metrics.csv" ] && [ "$r" -ge "$first" ]; }; then
            restart_run "$RUN" "its round $r was done under another retraining schedule (this one retrains rounds $first..$ROUNDS: --rounds $ROUNDS, --retrain-rounds $RETRAIN_ROUNDS)"
            return 0
        fi
    done
}
setup_run "${keys[@]}"
[ -z "$BODY" ] || check_body "$BODY"
KD=()
if [ -n "$TEACHER" ]; then KD=(--teacher "$TEACHER"); else log "no CLIP teacher: clients train without distillation"; fi
REL_OPT=(); [ -z "$REL" ] || REL_OPT=(-r "$REL")
TEMP_OPT=(); [ "$TEMP" = 0 ] || TEMP_OPT=(--temp "$TEMP")
body_protos=0
[ -z "$BODY" ] || ! grep -qxF "proto_bn=$PROTO_BN" "$BODY/config.txt" || body_protos=1

# prototypes R MODEL: every client's per-class means with MODEL (all clients, as the
# reference code), then the server's count-weighted average into R/prototypes.mpk.zst.
prototypes() {
    local r=$1 model=$2 k kk files=()
    for ((k = 0; k < CLIENTS; k++)); do
        kk=$(client_tag "$k"); files+=("$r/proto-$kk.mpk.zst")
        [ ! -f "$r/proto-$kk.mpk.zst" ] || continue
        job_spawn --name "client-$kk-prototypes" "$BIN/local-train" -m "$model" -d "$P/client-$kk.mpk.zst" --epochs 0 --seed "$SEED" \
            --threads "$THREADS" --prototypes "$r/proto-$kk.mpk.zst" --proto-bn "$PROTO_BN" ${QOPT[@]+"${QOPT[@]}"}
    done
    job_wait_all || die "prototype extraction failed in $r (the lines above)" 1
    run_tool "$BIN/aggregate" --prototypes -o "$r/prototypes.mpk.zst" "${files[@]}" ${QOPT[@]+"${QOPT[@]}"} || exit $?
}

# client_heads R: every selected client's pseudo-features (featgen, a job each), then its
# retrained head (retrain, a job each), skipping what exists.  Two rounds of jobs rather than
# one shell function per client, so that each job is one tool's command line, which
# --hosts can run on another host.
client_heads() {
    local r=$1 k kk
    for k in "${SELECTED[@]}"; do
        kk=$(client_tag "$k")
        [ ! -f "$r/head-$kk.mpk.zst" ] && [ ! -f "$r/pseudo-$kk.mpk.zst" ] || continue
        job_spawn --name "client-$kk-featgen" "$BIN/featgen" --method fedsm -m "$r/model.mpk.zst" \
            -d "$P/client-$kk.mpk.zst" -P "$r/prototypes.mpk.zst" ${REL_OPT[@]+"${REL_OPT[@]}"} \
            --select "$SELECT" ${TEMP_OPT[@]+"${TEMP_OPT[@]}"} --per-class "$PER_CLASS" \
            --proto-bn "$PROTO_BN" --round "$ROUND_N" --seed "$SEED" --threads "$THREADS" \
            -o "$r/pseudo-$kk.mpk.zst" ${QOPT[@]+"${QOPT[@]}"}
    done
    job_wait_all || die "pseudo-features failed in $r (the lines above)" 1
    for k in "${SELECTED[@]}"; do
        kk=$(client_tag "$k")
        [ ! -f "$r/head-$kk.mpk.zst" ] || continue
        job_spawn --name "client-$kk-retrain" "$BIN/retrain" --features "$r/pseudo-$kk.mpk.zst" \
            -m "$r/model.mpk.zst" --as-update --epochs "$HEAD_EPOCHS" --batch "$HEAD_BATCH" \
            --lr "$HEAD_LR" --round "$ROUND_N" --seed "$SEED" --threads "$THREADS" \
            -o "$r/head-$kk.mpk.zst" ${QOPT[@]+"${QOPT[@]}"}
    done
    job_wait_all || die "head retraining failed in $r (the lines above)" 1
}

for ((r = 1; r <= ROUNDS; r++)); do
    retrain_this=0; [ "$r" -le $((ROUNDS - RETRAIN_ROUNDS)) ] || retrain_this=1
    done_files=(model.mpk.zst); [ $retrain_this = 0 ] || done_files+=(retrained.mpk.zst)
    round_start "$r" "${done_files[@]}" || continue
    select_clients "$r"
    if [ -z "$TEACHER" ] && [ -n "$BODY" ] && body_link "$BODY" "$r" model.mpk.zst; then
        :
    else
        train_clients "$R" "$PREV/model.mpk.zst" ${KD[@]+"${KD[@]}"}
        fedavg_round "$R" "$PREV/model.mpk.zst"
    fi
    if [ $retrain_this = 0 ]; then
        [ "$EVAL_THIS" = 0 ] || [ -z "$BODY" ] || [ -f "$R/metrics.csv" ] || body_metrics "$BODY" "$r" || true
        round_end "$R" "$R/model.mpk.zst"; continue
    fi
    if [ ! -f "$R/prototypes.mpk.zst" ]; then
        [ $body_protos = 1 ] && [ -z "$TEACHER" ] && body_link "$BODY" "$r" prototypes.mpk.zst ||
            prototypes "$R" "$R/model.mpk.zst"
    fi
    if [ ! -f "$R/retrained.mpk.zst" ]; then
        client_heads "$R"
        heads=(); for k in "${SELECTED[@]}"; do heads+=("$R/head-$(client_tag "$k").mpk.zst"); done
        run_tool "$BIN/aggregate" --heads -m "$R/model.mpk.zst" -o "$R/retrained.mpk.zst" "${heads[@]}" \
            ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    round_end "$R" "$R/retrained.mpk.zst"
done
finish_run

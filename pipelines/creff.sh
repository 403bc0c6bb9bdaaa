#!/usr/bin/env bash
# pipelines/creff.sh - CReFF (docs/algorithms.md 3), and CLIP2FL (4) when run as clip2fl.sh:
# every round, the selected clients train locally (FedAvg) and also send per-class gradients
# of the previous round's retrained head on their data (local-train --gradients); the server
# averages the models (aggregate) and the gradients (aggregate --gradients), moves the
# persistent federated features towards the averaged gradients (featgen; CLIP2FL adds the
# prototype contrastive loss against CLIP's class text embeddings), and retrains a fresh
# head on them (retrain).  The evaluated model is the FedAvg body with the retrained head;
# the next round starts from the FedAvg model (its own head), the retrained head only
# feeds the next round's gradients and matching (docs/algorithms.md 3, step 9).
source "$(dirname "$0")/common.sh"

METHOD=${CREFF_METHOD:-creff}
METHOD_OPTS+=(
    "--features-per-class FPC int" "--match-iters MATCH_ITERS int" "--match-lr MATCH_LR num"
    "--grad-repeats GRAD_REPEATS int" "--grad-batch GRAD_BATCH int"
    "--head-epochs HEAD_EPOCHS int" "--head-batch HEAD_BATCH int" "--head-lr HEAD_LR num"
    "--body BODY path"
)
FPC=100 MATCH_ITERS=100 MATCH_LR=0.1 GRAD_REPEATS=10 GRAD_BATCH=32
HEAD_EPOCHS=300 HEAD_BATCH=32 HEAD_LR=0.01 BODY=
if [ "$METHOD" = clip2fl ]; then
    METHOD_OPTS+=("--clip CLIP path" "--clip-weights CLIP_WEIGHTS path" "--vocab VOCAB path"
                  "--beta BETA num" "--tau TAU num" "--kd-alpha KD_ALPHA num" "--kd-temp KD_TEMP num")
    CLIP= CLIP_WEIGHTS= VOCAB=$FEDSM_ROOT/data/clip/bpe_simple_vocab_16e6.txt.gz BETA=0.001 TAU=0.1
    KD_ALPHA=1 KD_TEMP=3 PROJ=512
fi

method_usage() {
    if [ "$METHOD" = clip2fl ]; then
        cat <<USAGE
usage: clip2fl.sh --data PATH (--clip-weights W | --clip CLIP) [options]
CLIP2FL (docs/algorithms.md 4): CReFF's rounds plus distillation from a frozen CLIP teacher
on the clients (local-train --teacher) and the prototype contrastive loss against CLIP's
class text embeddings in the server's feature update (featgen --method clip2fl).
clip2fl options:
  --clip-weights W   CLIP weights (model.safetensors or pytorch_model.bin; make clip-weights);
                     clip-embed runs once per run into RUN/clip.mpk.zst (teacher logits of
                     every client shard and the class text embeddings)
  --vocab V          CLIP's BPE vocabulary (default data/clip/bpe_simple_vocab_16e6.txt.gz)
  --clip CLIP        a clip-embed output made before (instead of --clip-weights)
  --beta B           weight of the prototype contrastive loss (default 0.001)
  --tau T            its temperature (default 0.1)
  --kd-alpha A, --kd-temp T   client distillation weight and temperature (1, 3)
  (--proj defaults to 512 here: the federated features have CLIP's embedding size)
USAGE
    else
        cat <<USAGE
usage: creff.sh --data PATH [options]
CReFF (docs/algorithms.md 3): FedAvg rounds plus classifier re-training on federated
features that the server learns by matching the clients' per-class head gradients.
USAGE
    fi
    cat <<USAGE
method options:
  --features-per-class M  federated features per class (default 100)
  --match-iters N         feature SGD steps per round (100)   --match-lr LR  their lr (0.1)
  --grad-repeats N        client gradient repeats per class (10)
  --grad-batch B          images per class and repeat (32)
  --head-epochs E         head retraining epochs (300)  --head-batch B (32)  --head-lr LR (0.01)
  --body FEDAVG_RUN       take each round's FedAvg model from a FedAvg run with the same
                          data, split, model and training options instead of training again
                          (exact: CReFF never feeds the retrained head back into training;
                          the clients' gradients are still computed here)
USAGE
}
method_usage_tail() {
    cat <<USAGE
outputs: RUN/metrics.csv (the FedAvg body with the retrained head, every evaluated round),
         RUN/accuracy.png, RUN/class-accuracy.{csv,png},
         RUN/round-RRR/{model,gradients,features,retrained}.mpk.zst
example: pipelines/$PROG.sh --data ../shared/data/cifar10-jpeg.tar.zst --if 100 --rounds 200 \\
           --jobs 2 --run runs/$METHOD-c10-if100
USAGE
}

parse_options "$@"
in_range --features-per-class "$FPC" 1 100000
in_range --grad-repeats "$GRAD_REPEATS" 1 100000
in_range --grad-batch "$GRAD_BATCH" 1 100000
in_range --head-batch "$HEAD_BATCH" 1 1048576
[ -z "$BODY" ] || [ -f "$BODY/config.txt" ] || die "--body $BODY is not a run directory (no config.txt)" 4
KD=()
if [ "$METHOD" = clip2fl ]; then
    [ -n "$CLIP" ] || [ -n "$CLIP_WEIGHTS" ] ||
        die "CLIP2FL needs CLIP: give --clip-weights (model.safetensors or pytorch_model.bin of openai/clip-vit-base-patch32; 'make clip-weights' downloads it) or --clip (a clip-embed output)" 2
    [ -z "$CLIP_WEIGHTS" ] || [ -f "$CLIP_WEIGHTS" ] || die "CLIP weights $CLIP_WEIGHTS do not exist (make clip-weights downloads them)" 4
    [ -z "$CLIP" ] || [ -f "$CLIP" ] || die "CLIP embeddings $CLIP do not exist" 4
    [ -n "$CLIP" ] || [ -f "$VOCAB" ] || die "CLIP vocabulary $VOCAB does not exist (give --vocab)" 4
    in_range --tau "$TAU" '>0' 1e6
    in_range --kd-alpha "$KD_ALPHA" 0 1e6
    in_range --kd-temp "$KD_TEMP" '>0' 1e6
    KD=(--kd-alpha "$KD_ALPHA" --kd-temp "$KD_TEMP")
fi
need_bin featgen retrain
keys=(fpc="$FPC" match_iters="$MATCH_ITERS" match_lr="$MATCH_LR" grad_repeats="$GRAD_REPEATS"
      grad_batch="$GRAD_BATCH" head_epochs="$HEAD_EPOCHS" head_batch="$HEAD_BATCH" head_lr="$HEAD_LR")
[ "$METHOD" != clip2fl ] || keys+=(beta="$BETA" tau="$TAU" kd_alpha="$KD_ALPHA" kd_temp="$KD_TEMP")
setup_run "${keys[@]}"
[ -z "$BODY" ] || check_body "$BODY"

if [ "$METHOD" = clip2fl ]; then
    if [ -z "$CLIP" ]; then
        CLIP=$RUN/clip.mpk.zst
        if [ ! -f "$CLIP" ]; then
            log "clip-embed: teacher logits of every client and the class text embeddings (once)"
            shards=(); for ((k = 0; k < CLIENTS; k++)); do shards+=(-s "$P/client-$(client_tag "$k").mpk.zst"); done
            run_tool "$BIN/clip-embed" -w "$CLIP_WEIGHTS" --vocab "$VOCAB" \
                "${shards[@]}" --threads "$((JOBS * THREADS))" -o "$CLIP" ${QOPT[@]+"${QOPT[@]}"} || exit $?
        fi
    fi
    KD+=(--teacher "$CLIP")
    MATCH=(--embeddings "$CLIP" --beta "$BETA" --tau "$TAU")
else
    MATCH=()
fi

# gradients_only R MODEL HEAD: the selected clients' per-class head gradients alone (the
# FedAvg model came from --body).
gradients_only() {
    local r=$1 model=$2 head=$3 k kk
    for k in "${SELECTED[@]}"; do
        kk=$(client_tag "$k")
        [ ! -f "$r/gradients-$kk.mpk.zst" ] || continue
        job_spawn --name "client-$kk-gradients" "$BIN/local-train" -m "$model" -d "$P/client-$kk.mpk.zst" --epochs 0 --seed "$SEED" \
            --threads "$THREADS" --gradients "$r/gradients-$kk.mpk.zst" --grad-head "$head" \
            --grad-repeats "$GRAD_REPEATS" --grad-batch "$GRAD_BATCH" ${QOPT[@]+"${QOPT[@]}"}
    done
    job_wait_all || die "client gradients failed in $r (the lines above)" 1
}

for ((r = 1; r <= ROUNDS; r++)); do
    round_start "$r" model.mpk.zst retrained.mpk.zst || continue
    select_clients "$r"
    HEAD=$PREV/retrained.mpk.zst
    [ "$r" != 1 ] || HEAD=$PREV/model.mpk.zst      # round 1: the initial model's fresh head
    GRAD=(--gradients "$R/gradients-{KK}.mpk.zst" --grad-head "$HEAD"
          --grad-repeats "$GRAD_REPEATS" --grad-batch "$GRAD_BATCH")
    if [ -f "$R/model.mpk.zst" ] && [ -f "$R/gradients.mpk.zst" ]; then
        :   # the clients' part is done (their files may be pruned): only what follows is left
    elif [ -n "$BODY" ] && body_link "$BODY" "$r" model.mpk.zst; then
        gradients_only "$R" "$PREV/model.mpk.zst" "$HEAD"
    else
        train_clients --also "$R/gradients-{KK}.mpk.zst" "$R" "$PREV/model.mpk.zst" "${GRAD[@]}" ${KD[@]+"${KD[@]}"}
        fedavg_round "$R" "$PREV/model.mpk.zst"
    fi
    if [ ! -f "$R/gradients.mpk.zst" ]; then
        grads=(); for k in "${SELECTED[@]}"; do grads+=("$R/gradients-$(client_tag "$k").mpk.zst"); done
        run_tool "$BIN/aggregate" --gradients -o "$R/gradients.mpk.zst" "${grads[@]}" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    if [ ! -f "$R/features.mpk.zst" ]; then
        prev=(); [ "$r" = 1 ] || prev=(--features "$PREV/features.mpk.zst")
        run_tool "$BIN/featgen" --method "$METHOD" -m "$HEAD" -g "$R/gradients.mpk.zst" ${prev[@]+"${prev[@]}"} \
            --per-class "$FPC" --iters "$MATCH_ITERS" --lr "$MATCH_LR" ${MATCH[@]+"${MATCH[@]}"} \
            --round "$r" --seed "$SEED" -o "$R/features.mpk.zst" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    if [ ! -f "$R/retrained.mpk.zst" ]; then
        run_tool "$BIN/retrain" --features "$R/features.mpk.zst" -m "$R/model.mpk.zst" \
            --epochs "$HEAD_EPOCHS" --batch "$HEAD_BATCH" --lr "$HEAD_LR" --round "$r" --seed "$SEED" \
            --threads "$((JOBS * THREADS))" -o "$R/retrained.mpk.zst" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    round_end "$R" "$R/retrained.mpk.zst"
done
finish_run

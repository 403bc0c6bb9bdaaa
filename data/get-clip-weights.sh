#!/bin/sh
# get-clip-weights.sh - downloads CLIP ViT-B/32 for clip-embed (make clip-weights):
#   openai/clip-vit-base-patch32 weights + config.json (Hugging Face) and the BPE
#   vocabulary bpe_simple_vocab_16e6.txt.gz (openai/CLIP), into DIR (default data/clip/).
# Weights: model.safetensors at REVISION; when the server answers 404 for it (the repo's
# main branch serves none), pytorch_model.bin (a torch.save checkpoint; clip-embed reads
# both).  Checks: the vocabulary against its pinned sha256; the weights file against
# MODEL_SHA256 when set (environment or below), else against the LFS sha256 the Hugging
# Face server reports for the file (x-linked-etag), which guards the transfer.
# Offline or on a mismatch: one error line, non-zero exit, nothing half-written left.
# Usage: data/get-clip-weights.sh [DIR]   (env: HF_ENDPOINT, MODEL_SHA256, REVISION)
set -eu
DIR=${1:-data/clip}
REPO=openai/clip-vit-base-patch32
REVISION=${REVISION:-main}
HF=${HF_ENDPOINT:-https://huggingface.co}
VOCAB_URL=https://raw.githubusercontent.com/openai/CLIP/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/bpe_simple_vocab_16e6.txt.gz
VOCAB_SHA256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
MODEL_SHA256=${MODEL_SHA256:-}

die() { echo "get-clip-weights: error: $*" >&2; exit 4; }
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is needed (coreutils)"
mkdir -p "$DIR" || die "cannot create $DIR"
tmp=$(mktemp -d "$DIR/.get.XXXXXX") || die "cannot create a temp dir in $DIR"
trap 'rm -rf "$tmp"' EXIT INT TERM

fetch() { # url out [headers-out]
    curl -fsSL --retry 2 --connect-timeout 15 ${3:+-D "$3"} -o "$2" "$1" 2>"$tmp/curl.err" \
        || die "cannot download $1 ($(tail -n1 "$tmp/curl.err" | tr -d '\r')); offline? Copy the files into $DIR by hand instead"
}
check() { # file sha256 [name]
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || die "${3:-$(basename "$1")}: sha256 $got, expected $2"
}

if [ ! -f "$DIR/bpe_simple_vocab_16e6.txt.gz" ]; then
    fetch "$VOCAB_URL" "$tmp/vocab"
    check "$tmp/vocab" "$VOCAB_SHA256"
    mv "$tmp/vocab" "$DIR/bpe_simple_vocab_16e6.txt.gz"
fi
if [ ! -f "$DIR/config.json" ]; then
    fetch "$HF/$REPO/resolve/$REVISION/config.json" "$tmp/config"
    mv "$tmp/config" "$DIR/config.json"
fi
# get_model NAME: downloads NAME into DIR, sha256-checked; returns 1 when the server has no
# such file (HTTP 404), dies on any other failure.
get_model() {
    url="$HF/$REPO/resolve/$REVISION/$1"
    echo "downloading $REPO $1 (about 600 MB) into $DIR" >&2
    code=$(curl -sSL --retry 2 --connect-timeout 15 -D "$tmp/headers" -o "$tmp/model" -w '%{http_code}' \
        "$url" 2>"$tmp/curl.err") \
        || die "cannot download $url ($(tail -n1 "$tmp/curl.err" | tr -d '\r')); offline? Copy the files into $DIR by hand instead"
    [ "$code" = 404 ] && return 1
    [ "$code" = 200 ] || die "cannot download $url (HTTP $code)"
    want=$MODEL_SHA256
    if [ -z "$want" ]; then
        want=$(tr -d '\r' < "$tmp/headers" | sed -n 's/^[xX]-[lL]inked-[eE]tag: *"\{0,1\}\([0-9a-f]\{64\}\)"\{0,1\}$/\1/p' | head -n1)
        [ -n "$want" ] || die "the server sent no sha256 for $1; set MODEL_SHA256 to check it"
    fi
    check "$tmp/model" "$want" "$1"
    mv "$tmp/model" "$DIR/$1" || die "cannot write $DIR/$1"
    echo "$1 sha256 $want (pin it with MODEL_SHA256=$want)" >&2
}

if [ ! -f "$DIR/model.safetensors" ] && [ ! -f "$DIR/pytorch_model.bin" ]; then
    if ! get_model model.safetensors; then
        echo "no model.safetensors at revision $REVISION (HTTP 404); trying pytorch_model.bin" >&2
        get_model pytorch_model.bin || die "neither model.safetensors nor pytorch_model.bin at $HF/$REPO (revision $REVISION)"
    fi
fi
weights=$DIR/model.safetensors
[ -f "$weights" ] || weights=$DIR/pytorch_model.bin
echo "CLIP ViT-B/32 ready in $DIR: clip-embed --weights $weights ..." >&2

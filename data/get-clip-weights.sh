#!/bin/sh
# get-clip-weights.sh - downloads CLIP ViT-B/32 for clip-embed (make clip-weights):
#   openai/clip-vit-base-patch32 model.safetensors + config.json (Hugging Face) and the BPE
#   vocabulary bpe_simple_vocab_16e6.txt.gz (openai/CLIP), into DIR (default data/clip/).
# Checks: the vocabulary against its pinned sha256; model.safetensors against the sha256
# pinned below when set (MODEL_SHA256, or the environment), else against the LFS sha256 the
# Hugging Face server reports for the file (x-linked-etag), which guards the transfer.
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
check() { # file sha256
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || die "$(basename "$1"): sha256 $got, expected $2"
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
if [ ! -f "$DIR/model.safetensors" ]; then
    echo "downloading $REPO model.safetensors (about 600 MB) into $DIR" >&2
    fetch "$HF/$REPO/resolve/$REVISION/model.safetensors" "$tmp/model" "$tmp/headers"
    want=$MODEL_SHA256
    if [ -z "$want" ]; then
        want=$(tr -d '\r' < "$tmp/headers" | sed -n 's/^[xX]-[lL]inked-[eE]tag: *"\{0,1\}\([0-9a-f]\{64\}\)"\{0,1\}$/\1/p' | head -n1)
        [ -n "$want" ] || die "the server sent no sha256 for model.safetensors; set MODEL_SHA256 to check it"
    fi
    check "$tmp/model" "$want"
    mv "$tmp/model" "$DIR/model.safetensors"
    echo "model.safetensors sha256 $want (pin it with MODEL_SHA256=$want)" >&2
fi
echo "CLIP ViT-B/32 ready in $DIR: clip-embed --weights $DIR/model.safetensors ..." >&2

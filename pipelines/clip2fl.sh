#!/usr/bin/env bash
# pipelines/clip2fl.sh - CLIP2FL (docs/algorithms.md 4): creff.sh's rounds with a CLIP teacher
# on the clients and the prototype contrastive loss on the server (see creff.sh).
CREFF_METHOD=clip2fl
source "$(dirname "$0")/creff.sh"

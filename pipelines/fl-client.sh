#!/usr/bin/env bash
# pipelines/fl-client.sh - the client side of pipelines/fl-server.sh, run on each client's
# host (README "Federated across machines"): fl-client with this checkout's binaries, its work
# folder beside the shard unless --work is given.  It waits for the server's tasks, trains on
# the shard with local-train and sends each update back until the server ends the run; a
# server restart is waited out (ZeroMQ reconnects).  Every option is fl-client's.
set -euo pipefail
FEDSM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${FEDSM_BIN:-$FEDSM_ROOT/${BUILD:-build}/bin}
[ -x "$BIN/fl-client" ] || BIN=$(dirname "$(command -v fl-client 2>/dev/null || echo /nonexistent/x)")
[ -x "$BIN/fl-client" ] || { echo "fl-client.sh: error: no fl-client binary (run make first)" >&2; exit 4; }

if [ $# = 0 ] || [[ " $* " == *" -h "* || " $* " == *" --help "* ]]; then
    cat <<USAGE
usage: fl-client.sh --server tcp://HOST:PORT (--key CLIENT.key --server-key SERVER.pub |
                    --insecure) --shard SHARD [--work DIR] [fl-client options]
Takes part in the rounds of pipelines/fl-server.sh from this host: the shard stays here.
--work defaults to SHARD's folder/fl-work-NAME (NAME: the shard's file name without
.mpk.zst).  fl-client's own help follows.

USAGE
    exec "$BIN/fl-client" --help
fi
args=("$@") shard= work=0
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    --shard | -d) shard=${args[i + 1]:-} ;;
    --shard=*) shard=${args[i]#--shard=} ;;
    --work | --work=*) work=1 ;;
    esac
done
if [ "$work" = 0 ] && [ -n "$shard" ]; then
    name=$(basename -- "$shard" .mpk.zst)
    args+=(--work "$(dirname -- "$shard")/fl-work-$name")
fi
exec "$BIN/fl-client" "${args[@]}"

# pipelines/common.sh - what every method's pipeline shares (sourced, not run).
# The shell owns the loop: each stage is one binary writing one artifact under the run
# directory, written to a temporary name and renamed, so an artifact that exists is complete
# and a killed run resumes at the first missing one.
#
# Run directory layout:
#   RUN/config.txt                 the options the run was started with (resume checks them)
#   RUN/partition/                 client-NN.mpk.zst, test.mpk.zst, partition.{mpk.zst,csv,svg}
#   RUN/round-000/model.mpk.zst    the initial global model
#   RUN/round-RRR/update-KK.mpk.zst, model.mpk.zst, metrics.csv, metrics.json
#   RUN/metrics.csv                one row per round (rebuilt from the rounds), accuracy.png

set -euo pipefail
FEDSM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${FEDSM_BIN:-$FEDSM_ROOT/${BUILD:-build}/bin}
[ -x "$BIN/aggregate" ] || BIN=$(dirname "$(command -v aggregate 2>/dev/null || echo /nonexistent/x)")
PROG=$(basename "$0" .sh)

log() { [ "${QUIET:-0}" = 1 ] || echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit "${2:-1}"; }
need_bin() { for b in "$@"; do [ -x "$BIN/$b" ] || die "missing tool $BIN/$b (run make first)" 4; done; }

# check_num NAME VALUE: a non-negative number
check_num() { [[ $2 =~ ^[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$ ]] || die "$1: '$2' is not a number" 2; }

# dataset_path PATH: a .tar.zst archive is unpacked once into the cache; prints the folder.
dataset_path() {
    local p=$1
    [ -e "$p" ] || die "dataset $p does not exist" 4
    case $p in
    *.tar.zst)
        local cache=${FEDSM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedsm}
        local name sum; name=$(basename "$p" .tar.zst)
        sum=$(sha256sum "$p" | cut -c1-16)   # keyed by content (shared with the tests' cache)
        local dir="$cache/$name-$sum"
        if [ ! -e "$dir/.complete" ]; then
            log "unpacking $p into $dir (once)"
            rm -rf "$dir.tmp.$$"; mkdir -p "$dir.tmp.$$"
            zstd -dc --long=31 "$p" | tar -x -C "$dir.tmp.$$" || die "cannot unpack $p" 4
            touch "$dir.tmp.$$/.complete"
            rm -rf "$dir"; mv "$dir.tmp.$$" "$dir"
        fi
        # the archive may hold one top folder
        if [ ! -d "$dir/train" ] && [ "$(ls "$dir" | wc -l)" = 1 ]; then dir="$dir/$(ls "$dir")"; fi
        echo "$dir" ;;
    *) echo "$p" ;;
    esac
}

# write_config RUN KEY=VALUE...: records the run's options; refuses to resume a run that
# was started with other options (unless FORCE=1).
write_config() {
    local run=$1; shift
    local want; want=$(printf '%s\n' "$@")
    if [ -f "$run/config.txt" ]; then
        if [ "$(cat "$run/config.txt")" != "$want" ] && [ "${FORCE:-0}" != 1 ]; then
            diff <(cat "$run/config.txt") <(echo "$want") >&2 || true
            die "$run was started with other options (above); use another --run or --force" 2
        fi
    else
        mkdir -p "$run"
        echo "$want" > "$run/config.txt.tmp.$$" && mv "$run/config.txt.tmp.$$" "$run/config.txt"
    fi
}

# lock_run RUN: one pipeline per run directory.  The lock is held by this shell and every
# child (fd 9), so a resumed run waits (LOCK_WAIT seconds, default 0) for stragglers of a
# killed one instead of racing them.  TERM/INT stop the background jobs too.
lock_run() {
    mkdir -p "$1"
    exec 9>"$1/.lock"
    flock -w "${LOCK_WAIT:-0}" 9 || die "another pipeline is using $1 (its .lock is held)" 1
    trap 'trap - TERM INT; kill $(jobs -p) 2>/dev/null; exit 143' TERM INT
}

# run_partition RUN DATA ARGS...: partitions once into RUN/partition.
run_partition() {
    local run=$1 data=$2; shift 2
    if [ ! -f "$run/partition/partition.mpk.zst" ]; then
        log "partitioning $data"
        "$BIN/partition" --in "$data" -o "$run/partition" --force "$@"
    fi
}

# parallel_run JOBS CMD-FILE: runs each line of CMD-FILE (a shell command) with at most JOBS
# at once; fails (after the others finish) if any failed.
parallel_run() {
    local jobs=$1 file=$2 failed=0 pids=() cmd
    while IFS= read -r cmd; do
        bash -c "$cmd" & pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed=1; done
    done < "$file"
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || { [ $? = 127 ] || failed=1; }; done
    return $failed
}

# collect_metrics RUN: RUN/metrics.csv from the rounds' rows; RUN/accuracy.png when gnuplot is there.
collect_metrics() {
    local run=$1 first=1 f
    : > "$run/metrics.csv.tmp"
    for f in "$run"/round-*/metrics.csv; do
        [ -f "$f" ] || continue
        if [ $first = 1 ]; then cat "$f"; first=0; else tail -n +2 "$f"; fi
    done >> "$run/metrics.csv.tmp"
    mv "$run/metrics.csv.tmp" "$run/metrics.csv"
    plot_metrics "$run/metrics.csv" "$run/accuracy.png" "${PLOT_TITLE:-$PROG}"
}

# plot_metrics CSV PNG TITLE: accuracy (overall, many, medium, few) per round.
plot_metrics() {
    local csv=$1 png=$2 title=$3
    command -v gnuplot >/dev/null || return 0
    [ "$(wc -l < "$csv")" -ge 2 ] || return 0
    gnuplot <<GP 2>/dev/null || log "gnuplot failed; no plot"
set terminal pngcairo size 900,540 noenhanced
set output "$png.tmp"
set datafile separator ","
set datafile missing ""
set key autotitle columnhead top right
set title "$title: test accuracy per round"
set xlabel "round"; set ylabel "top-1 accuracy (balanced test set)"; set yrange [-0.02:1.02]; set grid
plot "$csv" using 2:3 with linespoints lw 2 title "overall", \
     "" using 2:5 with lines dt 2 title "many", \
     "" using 2:6 with lines dt 3 title "medium", \
     "" using 2:7 with lines dt 4 title "few"
GP
    [ -f "$png.tmp" ] && mv "$png.tmp" "$png"
    return 0
}

# summary RUN: final, mean of the last 10 rounds, best (ALGORITHMS 8.9) as one line.
summary() {
    awk -F, 'NR>1 && $3!="" {n++; a[n]=$3; m[n]=$5; d[n]=$6; f[n]=$7; if ($3>best) best=$3}
      END { if (!n) exit; s=0; k=0; for (i=(n>10?n-9:1); i<=n; i++) {s+=a[i]; k++}
            printf "rounds %d  final %.4f  last10 %.4f  best %.4f  many %s  medium %s  few %s\n",
                   n, a[n], s/k, best, m[n], d[n], f[n] }' "$1/metrics.csv"
}

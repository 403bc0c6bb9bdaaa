# pipelines/common.sh - what every method's pipeline shares (sourced, not run).
# The shell owns the loop: each stage is one binary writing one artifact under the run
# directory, written to a temporary name and renamed, so an artifact that exists is complete
# and a killed run resumes at the first missing one.
#
# Run directory layout:
#   RUN/config.txt                 the options the run was started with (resume checks them)
#   RUN/partition/                 client-KK.mpk.zst, test.mpk.zst, partition.{mpk.zst,csv,svg}
#   RUN/round-000/model.mpk.zst    the initial global model
#   RUN/round-RRR/model.mpk.zst, metrics.csv, metrics.json, and the clients' update-KK.mpk.zst
#                                  until the round is complete (always with --keep-updates)
#   RUN/metrics.csv, accuracy.png  one row per evaluated round (rebuilt from the rounds)
#   RUN/class-accuracy.csv, .png   each class's top-1 per evaluated round (.png: <= 10 classes)
#   (a run moved aside by --force: RUN.old-N)
#
# A method's pipeline is a short script over the functions below (pipelines/fedavg.sh is one):
#   source "$(dirname "$0")/common.sh"
#   method_usage() { ...its usage line, description and own options... }   # printed before
#   METHOD_OPTS+=("--kd-alpha KD_ALPHA num"); KD_ALPHA=1     # its options (types below), defaults
#   parse_options "$@"                  # every option checked here, before any work (exit 2)
#   setup_run kd_alpha="$KD_ALPHA"      # lock, config.txt (+ its own keys), partition, round 0
#   for ((r = 1; r <= ROUNDS; r++)); do
#       round_start "$r" || continue    # sets R, PREV, EVAL_THIS; false when already complete
#       select_clients "$r"             # sets SELECTED
#       train_clients "$R" "$PREV/model.mpk.zst" --teacher "$T/teacher-{KK}.mpk.zst"
#       fedavg_round "$R" "$PREV/model.mpk.zst"
#       ...its own stages, each skipped when its output exists...
#       round_end "$R" "$R/model.mpk.zst"   # evaluate when due, RUN/metrics.csv, a log line
#   done
#   finish_run
#
# Safety: no user-given string is ever evaluated as code.  Commands are built as bash arrays
# and run with "${cmd[@]}" (no eval, no bash -c), strings going into gnuplot are quoted by
# gp_str, labels that a CSV/JSON row could not carry verbatim are refused up front.  In
# cluster mode (--hosts) a job is a script file of one command line, every word of it quoted
# by printf %q, that bash runs on its host (hosts_run).

set -euo pipefail
FEDSM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${FEDSM_BIN:-$FEDSM_ROOT/${BUILD:-build}/bin}
[ -x "$BIN/aggregate" ] || BIN=$(dirname "$(command -v aggregate 2>/dev/null || echo /nonexistent/x)")
PROG=$(basename "$0" .sh)

# one_line S: S with every control character (newline, tab, escape...) shown as '?'.
one_line() { printf '%s' "${1//[[:cntrl:]]/?}"; }
log() { [ "${QUIET:-0}" = 1 ] || echo "$PROG: $(one_line "$*")" >&2; }
# die MESSAGE [CODE]: one line "PROG: error: MESSAGE" on stderr, exit CODE (default 1).
die() { echo "$PROG: error: $(one_line "$1")" >&2; exit "${2:-1}"; }
need_bin() { local b; for b in "$@"; do [ -x "$BIN/$b" ] || die "missing tool $BIN/$b (run make first)" 4; done; }

# ---- temporaries and signals ----
# TERM/INT: stop the background jobs, wait for them, remove the temporaries registered with
# tmp_add, exit 128 + the signal (143 TERM, 130 INT).  Artifacts are renamed into place only
# when complete, so what is left is resumable.
TMPS=()
tmp_add() { TMPS+=("$@"); }
stop_and_clean() {
    local p; p=$(jobs -p)
    [ -z "$p" ] || kill -TERM $p 2>/dev/null || true
    wait 2>/dev/null || true
    [ ${#TMPS[@]} = 0 ] || rm -rf -- "${TMPS[@]}"
}
on_signal() { trap - TERM INT; stop_and_clean; exit "$1"; }
trap 'on_signal 143' TERM
trap 'on_signal 130' INT
# an exit after a signal that did not go through on_signal (errexit on a tool killed by it,
# `|| exit $?` of a tool killed by it: 128 + the signal) cleans up the same way
on_exit() { local rc=$?; [ "$rc" -lt 128 ] || stop_and_clean; }
trap on_exit EXIT

# run_tool CMD [ARG...]: runs CMD in the background and waits for it, so that a TERM/INT
# reaches on_signal at once instead of after CMD ends; returns CMD's exit status.
run_tool() { "$@" & wait $!; }

# Bounded background jobs.  job_spawn [--name NAME] CMD [ARG...]: starts CMD in the background
# once fewer than JOBS jobs are running.  job_wait_all: waits for every job started by
# job_spawn; false if any of them failed.  CMD is a program, or without --hosts also a shell
# function (refused in cluster mode: it runs on another host); NAME (e.g. client-03) names
# the job in cluster mode.
# Cluster mode (HOSTS set, --hosts): job_spawn only queues the job and job_wait_all runs the
# queue with GNU parallel (hosts_run), exiting with one line if a job failed every try.
# Without --hosts this bash runner stays: its TERM/INT handling and output are as before.
JOB_PIDS=() JOB_FAILED=0 JOB_QUEUE=() JOB_NAMES=()
job_reap_one() {
    local done_pid= rc=0 p keep=()
    wait -n -p done_pid "${JOB_PIDS[@]}" || rc=$?
    if [ -z "$done_pid" ]; then   # nothing left to wait for
        JOB_PIDS=(); return 0
    fi
    [ "$rc" = 0 ] || JOB_FAILED=1
    for p in "${JOB_PIDS[@]}"; do [ "$p" = "$done_pid" ] || keep+=("$p"); done
    JOB_PIDS=(${keep[@]+"${keep[@]}"})
}
job_spawn() {
    local name=
    if [ "$1" = --name ]; then name=$2; shift 2; fi
    if [ -n "${HOSTS:-}" ]; then
        ! declare -F -- "$1" >/dev/null ||
            die "--hosts: $PROG.sh's job '$1' is a shell function, which cannot run on another host (make it a script: docs/plugins.md)" 2
        JOB_NAMES+=("${name:-job-$((${#JOB_QUEUE[@]} + 1))}")
        JOB_QUEUE+=("$(printf '%q ' "$@")")
        return 0
    fi
    while [ ${#JOB_PIDS[@]} -ge "${JOBS:-1}" ]; do job_reap_one; done
    "$@" &
    JOB_PIDS+=($!)
}
job_wait_all() {
    [ ${#JOB_QUEUE[@]} = 0 ] || hosts_run
    while [ ${#JOB_PIDS[@]} -gt 0 ]; do job_reap_one; done
    local f=$JOB_FAILED; JOB_FAILED=0
    return "$f"
}

# hosts_run: (job_wait_all in cluster mode) runs the queued jobs with GNU parallel on HOSTS
# (HOSTS_OPT: --sshlogin SPEC or --sshloginfile FILE; the ssh command is parallel's own,
# $PARALLEL_SSH or ssh), JOBS at once on a host SPEC gives no N/ for, each job at most
# RETRIES times (a failed try goes to another host).  A job is a script R/jobs/NAME.sh: the
# FEDSM_* environment, then `exec` of its command line, every word quoted by printf %q;
# parallel runs `bash -- R/jobs/NAME.sh` (the path quoted by parallel) on the host, in this
# very directory (--workdir $PWD): every host must see the same files at the same absolute
# paths (a shared filesystem), BIN included.  The tools write each output to a temporary and
# rename it when complete, so a failed try leaves nothing a retry or a resume takes for
# done.  parallel's joblog (one line per job: the host of its last try, runtime, exit status,
# signal) is appended to R/joblog.txt.  When a job failed every try: one line naming the
# jobs that failed, their hosts and exit statuses, and the joblog; exit 1 (R/jobs stays; a
# rerun resumes, the jobs that succeeded being done).  A job script first creates
# NAME.sh.ran: a job parallel calls done that never ran is an error too.  TERM/INT stop
# parallel, which ends its ssh connections; parallel's wrapper on each host then kills the
# job there.
hosts_run() {
    local dir=$R/jobs i f v rc=0 files=()
    rm -rf -- "$dir"
    mkdir -p -- "$dir" || die "cannot create $dir" 4
    tmp_add "$dir"
    : >"$dir/list" || die "cannot write $dir/list" 4
    for i in "${!JOB_QUEUE[@]}"; do
        f=$dir/${JOB_NAMES[i]//[^A-Za-z0-9._-]/_}.sh
        [ ! -e "$f" ] || die "internal: two jobs named ${JOB_NAMES[i]}" 5
        { echo "# ${JOB_NAMES[i]}: a job of $PROG.sh --hosts, run by GNU parallel as: bash -- THIS_FILE"
          for v in $(compgen -e); do [[ $v != FEDSM_* ]] || printf 'export %s=%q\n' "$v" "${!v}"; done
          printf ': >%q || exit 4\n' "$f.ran"
          printf 'exec %s\n' "${JOB_QUEUE[i]}"
        } >"$f" && printf '%s\0' "$f" >>"$dir/list" || die "cannot write $f" 4
        files+=("$f")
    done
    local names=("${JOB_NAMES[@]}"); JOB_QUEUE=() JOB_NAMES=()
    run_tool parallel -0 --arg-file "$dir/list" "${HOSTS_OPT[@]}" --jobs "$JOBS" --retries "$RETRIES" \
        --workdir "$PWD" --joblog "$dir/joblog.txt" bash -- {} </dev/null || rc=$?
    if [ -f "$dir/joblog.txt" ]; then
        if [ -s "$R/joblog.txt" ]; then tail -n +2 "$dir/joblog.txt"; else cat "$dir/joblog.txt"; fi >>"$R/joblog.txt"
    fi
    if [ "$rc" = 0 ]; then   # parallel's exit 0 with a job that never started: e.g. a host whose $SHELL is empty
        for i in "${!names[@]}"; do
            [ -e "${files[i]}.ran" ] || die "${names[i]}: GNU parallel reported success but the job never ran (is \$SHELL set on its host? job script ${files[i]})" 1
        done
        rm -rf -- "$dir"; return 0
    fi
    local seq host ev sig failed=()
    [ ! -f "$dir/joblog.txt" ] || while IFS=$'\t' read -r seq host _ _ _ _ ev sig _; do
        [[ $seq =~ ^[0-9]+$ ]] && [ "$seq" -le ${#names[@]} ] && { [ "$ev" != 0 ] || [ "$sig" != 0 ]; } || continue
        if [ "$sig" != 0 ]; then v="signal $sig"; else v="exit $ev"; fi
        failed+=("${names[seq - 1]} (on $host, $v)")
    done <"$dir/joblog.txt"
    [ ${#failed[@]} -gt 0 ] || die "GNU parallel failed (exit $rc) in $R (its lines above)" 1
    v=$(printf ', %s' "${failed[@]}")
    die "${v:2} failed in $R after $RETRIES tr$([ "$RETRIES" = 1 ] && echo y || echo ies) (the lines above; joblog $R/joblog.txt, job scripts $dir)" 1
}

# ---- options ----
# An option table entry is "--name VAR TYPE".  TYPE: int (a whole number >= 0, leading zeros
# dropped), num (a decimal >= 0, e.g. 0.1 or 1e-3), path (non-empty), str, label (no comma,
# double quote, backslash or control character: it goes verbatim into CSV and JSON rows),
# enum:a,b,c, flag (no value; sets VAR=1).  METHOD_OPTS holds the method's own entries.
COMMON_OPTS=(
    "--data DATA path"           "--run RUN path"
    "--test-list TEST_LIST path" "--root ROOT path"
    "--if IF num"                "--alpha ALPHA num"
    "--clients CLIENTS int"      "--per-round PER_ROUND int"
    "--rounds ROUNDS int"        "--epochs EPOCHS int"
    "--batch BATCH int"          "--lr LR num"
    "--momentum MOMENTUM num"    "--wd WD num"
    "--arch ARCH enum:resnet8,cifar-resnet,resnet50"
    "--width WIDTH int"          "--proj PROJ int"
    "--seed SEED int"            "--jobs JOBS int"
    "--threads THREADS int"      "--aug AUG enum:batch,sample,none"
    "--label LABEL label"        "--eval-every EVAL_EVERY int"
    "--split SPLIT enum:creff,dirichlet,iid,shards"
    "--profile PROFILE enum:exp,step"
    "--force FORCE flag"         "--quiet QUIET flag"
    "--keep-updates KEEP_UPDATES flag" "--brief BRIEF flag"
    "--hosts HOSTS str"          "--retries RETRIES int"
)
METHOD_OPTS=()
# defaults (a method may change them after sourcing, before parse_options); empty MOMENTUM,
# WD, SPLIT, PROFILE, WIDTH mean the tools' defaults and stay out of config.txt.
METHOD=$PROG
DATA= RUN=runs/$PROG IF=100 ALPHA=0.5 CLIENTS=20 PER_ROUND=8 ROUNDS=200 EPOCHS=10 BATCH=32
LR=0.1 MOMENTUM= WD= ARCH=resnet8 WIDTH= PROJ=0 TEST_LIST= ROOT= SEED=7 JOBS=1 THREADS=1
AUG=batch LABEL=$PROG EVAL_EVERY=1 SPLIT= PROFILE= FORCE=0 QUIET=0 KEEP_UPDATES=0 BRIEF=0
HOSTS= RETRIES= HOSTS_OPT=()   # cluster mode (hosts_run); empty RETRIES: 3 with --hosts, else 1

# usage: method_usage (the method's own text, if defined), the common options, method_usage_tail.
usage() {
    if declare -F method_usage >/dev/null; then method_usage; else echo "usage: $PROG.sh --data PATH [options]"; fi
    cat <<USAGE
common options:
  --data PATH        dataset (CIFAR binary folder, image folder, list file, or a .tar.zst
                     of one, unpacked once into \${FEDSM_CACHE:-~/.cache/fedsm})
  --test-list FILE   list files (ImageNet-LT): the test set's list (partition --test-list)
  --root DIR         list files: folder the listed paths are relative to (partition --root)
  --run DIR          run directory (default runs/$PROG); rerunning resumes it
  --if F             imbalance factor >= 1 (default 100)  --alpha A   Dirichlet > 0 (0.5)
  --split S          creff (default), dirichlet, iid, shards (partition --split)
  --profile P        long-tail profile: exp (default), step (partition --profile)
  --clients N        clients (default 20)                 --per-round K  clients per round (8)
  --rounds R         rounds (default 200)                 --epochs E  local epochs (10)
  --batch B          local batch (32)                     --lr LR     SGD lr (0.1)
  --momentum M       SGD momentum in [0, 1] (default 0)   --wd WD     weight decay (0)
  --arch A           resnet8 (default), cifar-resnet, resnet50
  --width W          first-stage channels (default: the arch's, 64)
  --proj D           projection dims before the classifier (default 0 = none)
  --seed S           seed (default 7)
  --jobs J           local-train processes at once (default 1; with --hosts: on each host
                     that SPEC gives no N/ for)
  --threads T        threads per process (default 1)
  --hosts SPEC       cluster mode: run the clients' jobs with GNU parallel over ssh on
                     these hosts, SPEC being parallel's sshlogins, comma-separated
                     ([N/][user@]host, ':' this machine; e.g. 4/node1,4/node2,:), or
                     @FILE: one sshlogin a line (parallel --sshloginfile).  Every host
                     must see the run, the data and the tools at the same absolute paths
                     (a shared filesystem); joblog: RUN/round-RRR/joblog.txt
  --retries N        with --hosts: tries per job, a failed one moving to another host
                     (default 3; without --hosts jobs are not retried)
  --aug MODE         batch | sample | none (default batch)
  --label NAME       label in metrics.csv (default $PROG; no comma, quote or backslash)
  --eval-every N     evaluate every Nth round and each of the last 10 (default 1)
  --force            when RUN was started with other options (its config.txt), move it
                     aside to RUN.old-N and start afresh (without it: refused, exit 2)
  --keep-updates     keep every client's per-round files (updates, gradients,
                     prototypes, pseudo-features, heads: 4.5 MB per update or head for
                     ResNet-8 at full width); by default they are deleted once their
                     round is complete (resume and --body never read them)
  --brief            one line per round, without the tools' own lines
  -q, --quiet        only errors and the final summary
  -h, --help
Options take their value as the next word or after '='.  Every option is checked before
any work starts; exit 0 ok, 1 runtime, 2 usage, 3 bad input, 4 I/O, 143 TERM, 130 INT.
USAGE
    if declare -F method_usage_tail >/dev/null; then method_usage_tail; fi
}

# opt_find NAME: sets OPT_VAR and OPT_TYPE from COMMON_OPTS/METHOD_OPTS; false if unknown.
opt_find() {
    local e n
    for e in "${COMMON_OPTS[@]}" ${METHOD_OPTS[@]+"${METHOD_OPTS[@]}"}; do
        read -r n OPT_VAR OPT_TYPE <<<"$e"
        [ "$n" = "$1" ] && return 0
    done
    return 1
}

# check_value OPTION TYPE VALUE: exits 2 with one line unless VALUE is a TYPE; sets OPT_VALUE
# (the value, normalised: ints without leading zeros).
check_value() {
    local o=$1 t=$2 v=$3
    OPT_VALUE=$v
    case $t in
    int)
        [[ $v =~ ^[0-9]+$ ]] || die "$o: '$v' is not a whole number" 2
        [ ${#v} -le 18 ] || die "$o: '$v' is too large" 2
        OPT_VALUE=$((10#$v)) ;;
    num)
        [[ $v =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$ ]] && [ ${#v} -le 32 ] \
            || die "$o: '$v' is not a number" 2 ;;
    path) [ -n "$v" ] || die "$o: the path is empty" 2 ;;
    str) ;;
    label)
        [[ $v != *[[:cntrl:]\",\\]* ]] \
            || die "$o: '$v' holds a comma, double quote, backslash or control character (it is written verbatim into metrics.csv and metrics.json)" 2 ;;
    enum:*)
        [[ ,${t#enum:}, == *",$v,"* ]] || die "$o: '$v' is not one of ${t#enum:}" 2 ;;
    *) die "internal: option $o has an unknown type $t" 5 ;;
    esac
}

# in_range OPTION VALUE MIN MAX: exits 2 unless MIN <= VALUE <= MAX (numbers already checked;
# MIN may be >MIN for a strict bound).
in_range() {
    local o=$1 v=$2 lo=$3 hi=$4 strict=0
    [[ $lo == '>'* ]] && { strict=1; lo=${lo#>}; }
    awk -v x="$v" -v lo="$lo" -v hi="$hi" -v s="$strict" \
        'BEGIN { x += 0; exit !((s ? x > lo + 0 : x >= lo + 0) && x <= hi + 0) }' \
        || die "$o: $v is out of range (${3/>/more than } .. $hi)" 2
}

# need_value OPTION [VALUE...]: for scripts with their own small option loops (demo.sh,
# cifar10-lt-fedavg.sh): exits 2 with one line when OPTION has no value after it.
need_value() { [ $# -ge 2 ] || die "$1 needs a value (try $PROG.sh --help)" 2; }

# check_hosts: (parse_options) --hosts and --retries: sets HOSTS_OPT (parallel's --sshlogin
# SPEC, or --sshloginfile FILE for @FILE) and RETRIES (default 3 with --hosts; without it
# only 1, the bash runner retrying nothing).  Needs GNU parallel (not moreutils' parallel).
check_hosts() {
    if [ -z "$HOSTS" ]; then
        [ -z "$RETRIES" ] || [ "$RETRIES" = 1 ] || die "--retries needs --hosts (jobs on this machine alone are not retried)" 2
        RETRIES=1; return 0
    fi
    [[ $HOSTS != *[[:cntrl:]]* ]] || die "--hosts: '$HOSTS' holds a control character" 2
    RETRIES=${RETRIES:-3}
    in_range --retries "$RETRIES" 1 1000
    if [[ $HOSTS == @* ]]; then
        [ -f "${HOSTS#@}" ] || die "--hosts $HOSTS: no file ${HOSTS#@} (one sshlogin a line)" 4
        HOSTS_OPT=(--sshloginfile "${HOSTS#@}")
    else
        HOSTS_OPT=(--sshlogin "$HOSTS")
    fi
    parallel --version 2>/dev/null | grep -q '^GNU parallel' ||
        die "--hosts needs GNU parallel in PATH (Debian: apt-get install parallel)" 4
}

# parse_options ARG...: reads the common options and METHOD_OPTS into their variables, checks
# every value (type, range, --data given, --per-round <= --clients), exits 2 with one line on
# the first bad one, 0 after --help.  Nothing is created before it returns.
parse_options() {
    local a v has
    while [ $# -gt 0 ]; do
        a=$1; shift
        case $a in -h|--help) usage; exit 0 ;; -q) a=--quiet ;; esac
        has=0
        if [[ $a == --*=* ]]; then v=${a#*=}; a=${a%%=*}; has=1; fi
        opt_find "$a" || die "unknown option '$a' (try $PROG.sh --help)" 2
        if [ "$OPT_TYPE" = flag ]; then
            [ $has = 0 ] || die "$a takes no value" 2
            printf -v "$OPT_VAR" 1
            continue
        fi
        if [ $has = 0 ]; then
            [ $# -gt 0 ] || die "$a needs a value (try $PROG.sh --help)" 2
            v=$1; shift
        fi
        check_value "$a" "$OPT_TYPE" "$v"
        printf -v "$OPT_VAR" '%s' "$OPT_VALUE"
    done
    [ -n "$DATA" ] || die "--data PATH is required (try $PROG.sh --help)" 2
    in_range --if "$IF" 1 1e9
    in_range --alpha "$ALPHA" '>0' 1e9
    in_range --clients "$CLIENTS" 1 1048576
    in_range --per-round "$PER_ROUND" 1 "$CLIENTS"
    in_range --rounds "$ROUNDS" 1 1000000
    in_range --epochs "$EPOCHS" 0 1000000
    in_range --batch "$BATCH" 1 1048576
    in_range --lr "$LR" 0 1e6
    [ -z "$MOMENTUM" ] || in_range --momentum "$MOMENTUM" 0 1
    [ -z "$WD" ] || in_range --wd "$WD" 0 1e3
    [ -z "$WIDTH" ] || in_range --width "$WIDTH" 1 4096
    in_range --proj "$PROJ" 0 65536
    in_range --jobs "$JOBS" 1 1024
    in_range --threads "$THREADS" 0 1024
    in_range --eval-every "$EVAL_EVERY" 1 1000000
    check_hosts
    QOPT=(); [ "$QUIET" = 0 ] && [ "$BRIEF" = 0 ] || QOPT=(-q)
    return 0
}

# ---- setup ----
# resolve_dataset: a .tar.zst DATA is unpacked once into the cache (keyed by its content,
# shared with the tests' cache) and DATA becomes that folder.
resolve_dataset() {
    [ -e "$DATA" ] || die "dataset $DATA does not exist" 4
    case $DATA in
    *.tar.zst)
        local cache=${FEDSM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedsm}
        local name sum dir
        name=$(basename "$DATA" .tar.zst)
        sum=$(sha256sum <"$DATA" | cut -c1-16) || die "cannot read $DATA" 4
        dir="$cache/$name-$sum"
        if [ ! -e "$dir/.complete" ]; then
            log "unpacking $DATA into $dir (once)"
            tmp_add "$dir.tmp.$$"
            rm -rf "$dir.tmp.$$"; mkdir -p "$dir.tmp.$$"
            zstd -dc --long=31 <"$DATA" | tar -x -C "$dir.tmp.$$" || die "cannot unpack $DATA" 4
            touch "$dir.tmp.$$/.complete"
            rm -rf "$dir"; mv "$dir.tmp.$$" "$dir"
        fi
        # the archive may hold one top folder
        local top=("$dir"/*)
        if [ ! -d "$dir/train" ] && [ ${#top[@]} = 1 ] && [ -d "${top[0]}" ]; then dir=${top[0]}; fi
        DATA=$dir ;;
    esac
}

# config_norm: config.txt lines on stdin with the paths (data, test_list, root) made
# absolute, so that another spelling of the same file is not another run.
config_norm() {
    local line
    while IFS= read -r line; do
        case $line in data=*|test_list=*|root=*) line="${line%%=*}=$(realpath -m -- "${line#*=}")" ;; esac
        printf '%s\n' "$line"
    done
}

# write_config RUN KEY=VALUE...: records the run's options in RUN/config.txt.  A run is never
# resumed with other options (its rounds would mix two runs): unless FORCE=1 that is refused
# (exit 2, the differences shown); with FORCE=1, restart_run moves the old run aside and this
# one starts afresh, saying so.
write_config() {
    local run=$1; shift
    local want; want=$(printf '%s\n' "$@")
    if [ -f "$run/config.txt" ] && [ "$(config_norm <"$run/config.txt")" != "$(config_norm <<<"$want")" ]; then
        diff <(cat "$run/config.txt") <(echo "$want") >&2 || true
        restart_run "$run" "it was started with other options (above)"
    fi
    if [ ! -f "$run/config.txt" ]; then
        tmp_add "$run/config.txt.tmp.$$"
        echo "$want" > "$run/config.txt.tmp.$$" && mv "$run/config.txt.tmp.$$" "$run/config.txt"
    fi
}

# restart_run RUN WHY: RUN (locked) cannot be resumed as asked.  Without FORCE: one error
# line, exit 2.  With FORCE: RUN is renamed to the first free RUN.old-N (nothing is deleted),
# an empty RUN is created and locked in its place, and a line on stderr says so; the caller
# then starts from nothing (partition, round 0, ...).
restart_run() {
    local run=${1%/} why=$2 n=1
    [ "${FORCE:-0}" = 1 ] ||
        die "$run cannot be resumed: $why; give another --run, or --force to move it aside and start afresh" 2
    while [ -e "$run.old-$n" ]; do n=$((n + 1)); done
    mv -T -- "$run" "$run.old-$n" 2>/dev/null || die "--force: cannot move $run aside to $run.old-$n" 4
    exec 9>&-
    lock_run "$run"
    echo "$PROG: --force: $run cannot be resumed ($why): moved it to $run.old-$n; starting afresh" >&2
}

# lock_run RUN: one pipeline per run directory.  The lock is held by this shell and every
# child (fd 9), so a resumed run waits (LOCK_WAIT seconds, default 0) for stragglers of a
# killed one instead of racing them.  Once it is held, every temporary left in the run's
# layout (NAME.tmp and NAME.tmp.PID in RUN, its rounds and its partition: a killed run's, even
# a SIGKILLed one's) is stale and removed.
lock_run() {
    mkdir -p -- "$1" || die "cannot create the run directory $1" 4
    exec 9>"$1/.lock"
    flock -w "${LOCK_WAIT:-0}" 9 || die "another pipeline is using $1 (its .lock is held)" 1
    local f
    for f in "$1"/*.tmp "$1"/*.tmp.[0-9]* "$1"/round-*/*.tmp "$1"/round-*/*.tmp.[0-9]* "$1"/partition/*.tmp*; do
        [ ! -e "$f" ] || rm -rf -- "$f"
    done
}

# client_tag K: client K's number as partition names its shard (two digits, more for >= 101 clients).
client_tag() {
    local w=2 n=$((CLIENTS - 1))
    while [ "$n" -ge 100 ]; do w=$((w + 1)); n=$((n / 10)); done
    printf '%0*d' "$w" "$1"
}

# setup_run [KEY=VALUE...]: after parse_options: needs the tools, resolves DATA, locks RUN,
# writes or checks RUN/config.txt (the common options, then the method's KEY=VALUE pairs),
# partitions once into RUN/partition (P; with BODY set, links BODY's instead), and writes
# RUN/round-000/model.mpk.zst once.
setup_run() {
    need_bin partition aggregate local-train evaluate
    resolve_dataset
    export FEDSM_THREADS=$THREADS QUIET
    lock_run "$RUN"
    local conf=(method="$METHOD" data="$DATA" if="$IF" alpha="$ALPHA" clients="$CLIENTS"
        per_round="$PER_ROUND" epochs="$EPOCHS" batch="$BATCH" lr="$LR" arch="$ARCH"
        width="$WIDTH" proj="$PROJ" seed="$SEED" aug="$AUG"
        ${TEST_LIST:+test_list="$TEST_LIST"} ${ROOT:+root="$ROOT"} ${SPLIT:+split="$SPLIT"}
        ${PROFILE:+profile="$PROFILE"} ${MOMENTUM:+momentum="$MOMENTUM"} ${WD:+wd="$WD"} "$@")
    write_config "$RUN" "${conf[@]}"
    # a method's own resume check (method_check_run, e.g. FedSM's retraining schedule) may
    # call restart_run, which leaves an empty RUN: its config.txt is written again; only then
    # does a --body run link the body's partition
    if declare -F method_check_run >/dev/null; then method_check_run; fi
    [ -f "$RUN/config.txt" ] || write_config "$RUN" "${conf[@]}"
    [ -z "${BODY:-}" ] || body_partition "$BODY"
    P=$RUN/partition
    if [ ! -f "$P/partition.mpk.zst" ]; then
        log "partitioning $DATA"
        local cmd=("$BIN/partition" --in "$DATA" -o "$P" --force --if "$IF" --alpha "$ALPHA"
                   --clients "$CLIENTS" --seed "$SEED" --threads "$JOBS")
        [ -z "$TEST_LIST" ] || cmd+=(--test-list "$TEST_LIST")
        [ -z "$ROOT" ] || cmd+=(--root "$ROOT")
        [ -z "$SPLIT" ] || cmd+=(--split "$SPLIT")
        [ -z "$PROFILE" ] || cmd+=(--profile "$PROFILE")
        run_tool "${cmd[@]}" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
    mkdir -p "$RUN/round-000"
    if [ ! -f "$RUN/round-000/model.mpk.zst" ]; then
        local cmd=("$BIN/aggregate" --init "$ARCH" --partition "$P/partition.mpk.zst" --proj "$PROJ"
                   --seed "$SEED" -o "$RUN/round-000/model.mpk.zst")
        [ -z "$WIDTH" ] || cmd+=(--width "$WIDTH")
        run_tool "${cmd[@]}" ${QOPT[@]+"${QOPT[@]}"} || exit $?
    fi
}

# ---- one round ----
# round_dir N: prints RUN/round-NNN.
round_dir() { printf '%s/round-%03d' "$RUN" "$1"; }

# round_start N [FILE...]: sets R (this round's folder, created), PREV (the previous one's),
# EVAL_THIS (1 when round N is evaluated: every EVAL_EVERY-th and each of the last 10) and
# ROUND_T0.  False (skip the round) when it is complete: every FILE exists in R (default
# model.mpk.zst) and, when EVAL_THIS, R/metrics.csv too.
round_start() {
    local n=$1 f; shift
    [ $# -gt 0 ] || set -- model.mpk.zst
    R=$(round_dir "$n") PREV=$(round_dir $((n - 1))) ROUND_N=$n ROUND_T0=$SECONDS EVAL_THIS=0
    if [ $((n % EVAL_EVERY)) = 0 ] || [ "$n" -gt $((ROUNDS - 10)) ]; then EVAL_THIS=1; fi
    local done=1
    for f in "$@"; do [ -f "$R/$f" ] || done=0; done
    [ $EVAL_THIS = 0 ] || [ -f "$R/metrics.csv" ] || done=0
    [ $done = 0 ] || return 1
    mkdir -p "$R"
}

# select_clients N: sets SELECTED to round N's clients (aggregate --select: seeded by SEED and
# N, PER_ROUND of CLIENTS, ascending).
select_clients() {
    local out k
    out=$("$BIN/aggregate" --select "$PER_ROUND" --clients "$CLIENTS" --round "$1" --seed "$SEED") || exit $?
    mapfile -t SELECTED <<<"$out"
    for k in "${SELECTED[@]}"; do [[ $k =~ ^[0-9]+$ ]] || die "internal: aggregate --select printed '$k'" 5; done
}

# train_clients [--also PATTERN]... R MODEL [ARG...]: local-train of every SELECTED client from
# MODEL on its shard P/client-KK.mpk.zst, writing R/update-KK.mpk.zst, at most JOBS processes
# at once.  Each ARG goes to every client's local-train as one argument (after the common
# ones), with each {KK} in it replaced by the client's tag: e.g. --teacher "DIR/teacher-{KK}.mpk.zst"
# or --gradients "$R/gradients-{KK}.mpk.zst".  Nothing is evaluated.  A client is skipped
# (resume) when its update and every --also PATTERN file (with {KK} replaced) exist; every
# client is, without --also, once R/model.mpk.zst (their average) exists: the updates of a
# complete round are deleted (prune_round), and a resume that only evaluates it (another
# --eval-every or --rounds) must not train them again.
# Fails with one line, after every started process has ended, if one of them failed.
train_clients() {
    local also=()
    while [ "${1:-}" = --also ]; do also+=("$2"); shift 2; done
    local r=$1 model=$2; shift 2
    [ ${#also[@]} -gt 0 ] || [ ! -f "$r/model.mpk.zst" ] || return 0
    local k kk a f skip cmd
    for k in "${SELECTED[@]}"; do
        kk=$(client_tag "$k")
        skip=1
        for f in "$r/update-$kk.mpk.zst" ${also[@]+"${also[@]}"}; do [ -f "${f//\{KK\}/$kk}" ] || skip=0; done
        [ $skip = 0 ] || continue
        cmd=("$BIN/local-train" -m "$model" -d "$P/client-$kk.mpk.zst" --epochs "$EPOCHS"
             --batch "$BATCH" --lr "$LR" --aug "$AUG" --seed "$SEED" --threads "$THREADS"
             -o "$r/update-$kk.mpk.zst")
        [ -z "$MOMENTUM" ] || cmd+=(--momentum "$MOMENTUM")
        [ -z "$WD" ] || cmd+=(--wd "$WD")
        for a in "$@"; do cmd+=("${a//\{KK\}/$kk}"); done
        job_spawn --name "client-$kk" "${cmd[@]}" ${QOPT[@]+"${QOPT[@]}"}
    done
    job_wait_all || die "local training failed in $r (the lines above)" 1
}

# fedavg_round R MODEL [ARG...]: aggregate the SELECTED clients' R/update-KK.mpk.zst over
# MODEL (the previous global model) into R/model.mpk.zst, unless it exists; ARGs go to
# aggregate.  With AGGREGATE_CMD set (fedavg.sh --aggregate-cmd), custom_aggregate instead.
fedavg_round() {
    local r=$1 model=$2; shift 2
    [ ! -f "$r/model.mpk.zst" ] || return 0
    local ups=() k
    for k in "${SELECTED[@]}"; do ups+=("$r/update-$(client_tag "$k").mpk.zst"); done
    if [ -n "${AGGREGATE_CMD:-}" ]; then custom_aggregate "$r" "$model" "${ups[@]}"; return; fi
    run_tool "$BIN/aggregate" -m "$model" -o "$r/model.mpk.zst" "$@" ${QOPT[@]+"${QOPT[@]}"} "${ups[@]}" || exit $?
}

# check_cmd OPTION PROG: sets CMD_PATH to PROG's absolute path, PROG being an executable file
# (a name without '/' is looked up in PATH, as a command name; nothing is evaluated); exits 2
# with one line otherwise.
check_cmd() {
    local o=$1 p=$2
    if [[ $p != */* ]]; then p=$(type -P -- "$p") || die "$o: '$2' is not a program in PATH" 2; fi
    [ -f "$p" ] && [ -x "$p" ] || die "$o: '$2' is not an executable file" 2
    CMD_PATH=$(realpath -- "$p") || die "$o: cannot resolve '$2'" 2
}

# custom_aggregate R MODEL UPDATE...: a user's aggregation rule in place of aggregate (docs/
# plugins.md): runs AGGREGATE_CMD -m MODEL -o R/model.tmp.PID.mpk.zst UPDATE... (an argument
# array, never a shell string), then renames its output to R/model.mpk.zst only once inspect
# has read it whole and it is one model record of round ROUND_N with MODEL's tensors (names,
# dtypes, shapes).  Otherwise one error line, exit 1 (it failed) or 3 (it wrote no valid
# model), and nothing is left for a resume to mistake for the round's model.
custom_aggregate() {
    local r=$1 model=$2; shift 2
    local tmp="$r/model.tmp.$$.mpk.zst" rc=0 head what="--aggregate-cmd ${AGGREGATE_CMD##*/}"
    tmp_add "$tmp"
    rm -f -- "$tmp"
    run_tool "$AGGREGATE_CMD" -m "$model" -o "$tmp" "$@" || rc=$?
    [ "$rc" = 0 ] || { rm -f -- "$tmp"; die "$what failed (exit $rc) in $r (its lines above)" 1; }
    [ -f "$tmp" ] || die "$what exited 0 but wrote no model (-o $tmp)" 3
    head=$("$BIN/inspect" --no-stats "$tmp" 2>&1) \
        || { rm -f -- "$tmp"; die "$what wrote an invalid stream in $r: $(grep -m1 'error:' <<<"$head" | sed 's/^.*error: //')" 3; }
    local recs first=${head%%$'\n'*} is_model='^#0 model ' round_re=' round=([0-9]+)( |$)'
    recs=$(grep -c '^#' <<<"$head")
    [[ $recs = 1 && $first =~ $is_model ]] \
        || { rm -f -- "$tmp"; die "$what wrote $recs record(s) in $r, not one model record" 3; }
    [[ $first =~ $round_re && ${BASH_REMATCH[1]} = "$ROUND_N" ]] \
        || { rm -f -- "$tmp"; die "$what wrote a model without meta.round = $ROUND_N in $r" 3; }
    if ! cmp -s <(awk '/^  /{print $1, $2, $3}' <<<"$head" | sort) \
                <("$BIN/inspect" --no-stats "$model" | awk '/^  /{print $1, $2, $3}' | sort); then
        rm -f -- "$tmp"
        die "$what wrote a model whose tensors (names, dtypes, shapes) are not those of $model" 3
    fi
    mv -- "$tmp" "$r/model.mpk.zst"
}

# evaluate_round R MODEL [ARG...]: evaluates MODEL (e.g. R/model.mpk.zst, or a model with a
# retrained head) on the test shard into R/metrics.json and R/metrics.csv (label LABEL; the
# CSV is renamed last, so its presence means the round's metrics are complete), then rebuilds
# RUN/metrics.csv and the plot.  ARGs go to evaluate.  Skipped when R/metrics.csv exists.
evaluate_round() {
    local r=$1 model=$2; shift 2
    if [ ! -f "$r/metrics.csv" ]; then
        tmp_add "$r/metrics.csv.tmp" "$r/metrics.json.tmp"
        rm -f "$r/metrics.csv.tmp" "$r/metrics.json.tmp"
        run_tool "$BIN/evaluate" -m "$model" --test "$P/test.mpk.zst" -p "$P/partition.mpk.zst" \
            --label "$LABEL" --csv "$r/metrics.csv.tmp" --json "$r/metrics.json.tmp" \
            --threads "$((JOBS * THREADS))" "$@" ${QOPT[@]+"${QOPT[@]}"} || exit $?
        mv "$r/metrics.json.tmp" "$r/metrics.json"
        mv "$r/metrics.csv.tmp" "$r/metrics.csv"
    fi
    collect_metrics "$RUN"
}

# round_end R MODEL [ARG...]: when EVAL_THIS, evaluate_round R MODEL ARG...; then
# prune_round R and one log line (top-1 and many/medium/few in percent).
round_end() {
    local r=$1
    [ "$EVAL_THIS" = 0 ] || evaluate_round "$@"
    prune_round "$r"
    if [ "$EVAL_THIS" = 0 ]; then
        log "round $ROUND_N/$ROUNDS done in $((SECONDS - ROUND_T0)) s (not evaluated)"
    else
        log "round $ROUND_N/$ROUNDS done in $((SECONDS - ROUND_T0)) s: $(awk -F, 'function p(x) { return x == "" ? "-" : sprintf("%.1f %%", 100 * x) }
            NR == 2 { printf "top-1 %s (many %s, medium %s, few %s)", p($3), p($5), p($6), p($7) }' "$r/metrics.csv")"
    fi
}

# prune_round R: unless KEEP_UPDATES=1, deletes the clients' files of the complete round R
# (update-KK, and the methods' gradients-KK, proto-KK, pseudo-KK, head-KK).  Nothing reads
# them once the round's averages exist: resume needs each round's model.mpk.zst (and the
# methods' retrained.mpk.zst, features.mpk.zst, gradients.mpk.zst, prototypes.mpk.zst,
# which stay), --body links a body's model.mpk.zst and prototypes.mpk.zst and reads its
# metrics.csv/json.
prune_round() {
    [ "${KEEP_UPDATES:-0}" = 0 ] || return 0
    local f
    for f in "$1"/update-*.mpk.zst "$1"/gradients-*.mpk.zst "$1"/proto-*.mpk.zst \
             "$1"/pseudo-*.mpk.zst "$1"/head-*.mpk.zst; do
        [ ! -f "$f" ] || rm -f -- "$f"
    done
}

# finish_run: rebuilds RUN/metrics.csv and the plot, prints "LABEL: summary" on stdout.
finish_run() {
    collect_metrics "$RUN"
    echo "$LABEL: $(summary "$RUN")"
}

# ---- sharing a FedAvg body ----
# CReFF, CLIP2FL without a teacher and FedSM without a teacher never feed their retrained
# heads back into local training (docs/algorithms.md 3 step 9, 5.4 step 7): their global
# models are round for round those of FedAvg with the same options.  A method run may take
# them from such a run (--body RUN) instead of training again.

# body_partition BODY: (setup_run, when BODY is set) a new run takes BODY's partition (hard
# links), so that both runs read the very same shards.
body_partition() {
    local body=$1 f
    [ ! -e "$RUN/partition/partition.mpk.zst" ] || return 0
    [ -f "$body/partition/partition.mpk.zst" ] || die "--body $body has no partition" 4
    mkdir -p "$RUN/partition" || die "cannot create $RUN/partition" 4
    for f in "$body"/partition/*; do
        [ -f "$f" ] || continue
        ln -f "$f" "$RUN/partition/" 2>/dev/null || cp "$f" "$RUN/partition/" || die "cannot copy $f" 4
    done
}

# check_body BODY: exits 2 with one line unless BODY was run with this run's data, split,
# model and training options (the keys that decide the FedAvg trajectory; a method's own
# keys may differ, so a FedSM run can serve as another FedSM run's body) and partition.
BODY_KEYS=(data test_list root if alpha split profile clients per_round epochs batch lr momentum wd
           arch width proj seed aug teacher)
check_body() {
    local body=$1 key mine theirs
    for key in "${BODY_KEYS[@]}"; do
        mine=$(grep -- "^$key=" "$RUN/config.txt" || true)
        theirs=$(grep -- "^$key=" "$body/config.txt" || true)
        case $key in data|test_list|root)   # the same file, however it was named
            [ -z "$mine" ] || mine="$key=$(realpath -m -- "${mine#*=}")"
            [ -z "$theirs" ] || theirs="$key=$(realpath -m -- "${theirs#*=}")" ;;
        esac
        [ "$mine" = "$theirs" ] ||
            die "--body $body was run with other options (${theirs:-no $key}; this run: ${mine:-no $key})" 2
    done
    cmp -s "$body/partition/partition.mpk.zst" "$P/partition.mpk.zst" ||
        die "--body $body has another partition than $RUN" 2
}

# body_link BODY N FILE...: links (or copies) each FILE of BODY's round N into round N of this
# run; false, linking nothing, unless BODY's round N has every FILE.
body_link() {
    local body=$1 src f; src=$(printf '%s/round-%03d' "$body" "$2"); shift 2
    for f in "$@"; do [ -f "$src/$f" ] || return 1; done
    for f in "$@"; do
        [ ! -f "$R/$f" ] || continue
        if ! ln -f "$src/$f" "$R/$f" 2>/dev/null; then
            tmp_add "$R/$f.tmp.$$"
            cp "$src/$f" "$R/$f.tmp.$$" && mv "$R/$f.tmp.$$" "$R/$f" || die "cannot copy $src/$f" 4
        fi
    done
}

# body_metrics BODY N: round N's metrics of BODY, relabelled LABEL, as this run's (the model
# evaluated is the very same file); false when BODY has none for round N.
body_metrics() {
    local src; src=$(printf '%s/round-%03d' "$1" "$2")
    # a body round with a retrained model (a CReFF or FedSM run as the body) was evaluated
    # with that model, not with model.mpk.zst: its metrics are not this round's
    [ -f "$src/metrics.csv" ] && [ -f "$src/metrics.json" ] && [ ! -f "$src/retrained.mpk.zst" ] &&
        cmp -s "$src/model.mpk.zst" "$R/model.mpk.zst" || return 1
    tmp_add "$R/metrics.csv.tmp" "$R/metrics.json.tmp"
    LABEL=$LABEL awk -F, -v OFS=, 'NR == 2 { $1 = ENVIRON["LABEL"] } { print }' "$src/metrics.csv" >"$R/metrics.csv.tmp" &&
    LABEL=$LABEL awk '{ i = index($0, "\"label\":\""); j = index(substr($0, i + 9), "\"");
        print substr($0, 1, i + 8) ENVIRON["LABEL"] substr($0, i + 9 + j - 1) }' "$src/metrics.json" >"$R/metrics.json.tmp" &&
    mv "$R/metrics.json.tmp" "$R/metrics.json" && mv "$R/metrics.csv.tmp" "$R/metrics.csv" || die "cannot write the metrics of $R" 4
}

# ---- metrics ----
# round_files RUN NAME [MAX]: sets ROUND_FILES to RUN/round-N/NAME for every round N that
# has it, in round order (numeric: round-1000 comes after round-999), N <= MAX when given.
ROUND_FILES=()
round_files() {
    local f n byn=()
    for f in "$1"/round-*/"$2"; do
        [ -f "$f" ] || continue
        n=${f%/*}; n=${n##*/round-}
        [[ $n =~ ^[0-9]{1,9}$ ]] || continue
        n=$((10#$n))
        [ -z "${3:-}" ] || [ "$n" -le "$3" ] || continue
        byn[n]=$f
    done
    ROUND_FILES=(${byn[@]+"${byn[@]}"})
}

# collect_metrics RUN: RUN/metrics.csv from the rows of rounds 1..ROUNDS (a run resumed with
# a lower --rounds keeps its later rounds on disk, for a later resume, but they are no
# longer its results), every row under this run's --label (a resume may rename it; the
# rounds' own files keep the label they were evaluated under), RUN/class-accuracy.csv from
# their metrics.json (per-class top-1), and, when gnuplot is there, RUN/accuracy.png and
# (10 classes or fewer) RUN/class-accuracy.png.
collect_metrics() {
    local run=$1
    tmp_add "$run/metrics.csv.tmp" "$run/class-accuracy.csv.tmp"
    : > "$run/metrics.csv.tmp"
    round_files "$run" metrics.csv "$ROUNDS"
    # one process, in the foreground (a TERM then reaches on_signal, which removes the .tmp):
    # the first file's header, every file's rows
    [ ${#ROUND_FILES[@]} = 0 ] ||
        LABEL=$LABEL awk -F, -v OFS=, 'FNR == 1 { if (NR > 1) next; print; next } { $1 = ENVIRON["LABEL"]; print }' \
            "${ROUND_FILES[@]}" >> "$run/metrics.csv.tmp"
    mv "$run/metrics.csv.tmp" "$run/metrics.csv"
    if class_accuracy "$run" > "$run/class-accuracy.csv.tmp"; then
        mv "$run/class-accuracy.csv.tmp" "$run/class-accuracy.csv"
    else
        rm -f "$run/class-accuracy.csv.tmp"
    fi
    local title=${PLOT_TITLE:-$(run_title "$run" "$LABEL")}
    plot_metrics "$run/metrics.csv" "$run/accuracy.png" "$title"
    [ ! -f "$run/class-accuracy.csv" ] || plot_classes "$run/class-accuracy.csv" "$run/class-accuracy.png" "$title"
}

# csv_split: each line of stdin, a CSV row (RFC 4180 quoting, as the tools write it), as
# its fields one per line.
csv_split() {
    awk '{ s = $0; f = ""; q = 0
           for (i = 1; i <= length(s); i++) { c = substr(s, i, 1)
               if (q) { if (c == "\"") { if (substr(s, i + 1, 1) == "\"") { f = f c; i++ } else q = 0 } else f = f c }
               else if (c == "\"") q = 1
               else if (c == ",") { print f; f = "" }
               else f = f c }
           print f }'
}

# csv_field S: S as one CSV field (quoted when it holds a comma, quote or edge space).
csv_field() {
    case $1 in *[,\"]*|' '*|*' ') local s=${1//\"/\"\"}; printf '"%s"' "$s" ;; *) printf '%s' "$1" ;; esac
}

# class_names RUN: the class names of RUN's partition, one per line (partition.csv's header
# after client,size,classes); false when there is none.
class_names() {
    [ -f "$1/partition/partition.csv" ] || return 1
    head -n 1 "$1/partition/partition.csv" | tr -d '\r' | csv_split | tail -n +4
}

# class_accuracy RUN: "round,NAME..." then one row per evaluated round 1..ROUNDS with each
# class's top-1 (a fraction; empty for a class without test images), from their metrics.json.
class_accuracy() {
    local run=$1 names=() n
    mapfile -t names < <(class_names "$run") && [ ${#names[@]} -gt 0 ] || return 1
    printf 'round'; for n in "${names[@]}"; do printf ',%s' "$(csv_field "$(one_line "$n")")"; done; echo
    round_files "$run" metrics.json "$ROUNDS"
    [ ${#ROUND_FILES[@]} -gt 0 ] || return 0
    awk '{ r = $0; if (!sub(/.*"round":/, "", r)) next; sub(/,.*/, "", r)
           p = $0; if (!sub(/.*"per_class":\[/, "", p)) next; sub(/\].*/, "", p)
           n = split(p, v, ","); line = r
           for (i = 1; i <= n; i++) line = line "," (v[i] + 0 < 0 ? "" : v[i]); print line }' "${ROUND_FILES[@]}"
}

# run_conf RUN KEY: KEY's value in RUN/config.txt (empty when absent).
run_conf() { sed -n "s/^$2=//p" "$1/config.txt" 2>/dev/null | head -n 1; }

# run_dataset RUN: a short name of RUN's data: the file or folder name without .tar.zst and
# without the 16-digit content key of the unpacking cache.
run_dataset() {
    local d; d=$(basename -- "$(run_conf "$1" data)")
    d=${d%.tar.zst}
    [[ ! $d =~ ^(.+)-[0-9a-f]{16}$ ]] || d=${BASH_REMATCH[1]}
    printf '%s' "${d:-?}"
}

# run_title RUN [LABEL]: "LABEL (METHOD) on DATASET, IF N" from RUN/config.txt (the method
# alone when LABEL is empty or the method's name).
run_title() {
    local m; m=$(run_conf "$1" method)
    local who=${2:-$m}; [ "$who" = "$m" ] || [ -z "$m" ] || who="$who ($m)"
    printf '%s on %s, IF %s' "$who" "$(run_dataset "$1")" "$(run_conf "$1" if)"
}

# gp_str S: S as a gnuplot single-quoted string (no escapes, no macros, no backquotes are
# interpreted inside one; ' is doubled, control characters become spaces).
gp_str() {
    local s=${1//[[:cntrl:]]/ }
    printf "'%s'" "${s//\'/\'\'}"
}

# gp_rounds CSV... : gnuplot lines for a whole-number round axis over the rounds (column 2
# of metrics.csv files, column 1 of class-accuracy.csv with COL=1): the range padded by half
# a round, a tic every 1, 2, 5, 10, 20, 50... rounds (about 10 tics), no fractions.
gp_rounds() {
    local lo hi step
    read -r lo hi < <(awk -F, -v c="${COL:-2}" 'FNR > 1 && $c ~ /^[0-9]+$/ { if (lo == "" || $c + 0 < lo) lo = $c + 0; if ($c + 0 > hi) hi = $c + 0 }
        END { print (lo == "" ? 0 : lo), hi + 0 }' "$@")
    step=1
    while [ $(((hi - lo) / step)) -gt 12 ]; do
        case $step in 1*) step=$((step * 2)) ;; 2*) step=$((step * 5 / 2)) ;; *) step=$((step * 2)) ;; esac
    done
    echo "set xrange [$lo - 0.5:$hi + 0.5]; set xtics $step; set mxtics 1; set format x '%.0f'"
}

# gp_percent: the accuracy axis in percent, from a little below 0 to a little above 100, so
# that a curve at 0 % or 100 % lies inside the frame, not on it.
gp_percent() { echo "set yrange [-4:104]; set ytics 0, 10, 100; set grid"; }

# plot_metrics CSV PNG TITLE: top-1 (overall, many, medium, few) per round, in percent.
plot_metrics() {
    local csv=$1 png=$2 title=$3
    command -v gnuplot >/dev/null || return 0
    [ "$(wc -l < "$csv")" -ge 2 ] || return 0
    tmp_add "$png.tmp"
    {
        echo "set terminal pngcairo size 900,540 noenhanced"
        echo "set output $(gp_str "$png.tmp")"
        echo 'set datafile separator ","; set datafile missing ""; set key outside right top noautotitle'
        echo "set title $(gp_str "$title: top-1 per round")"
        echo 'set xlabel "round"; set ylabel "top-1 accuracy, % (balanced test set)"'
        gp_rounds "$csv"; gp_percent
        echo "plot $(gp_str "$csv") skip 1 using 2:(100*\$3) with linespoints lw 2 pt 7 ps 0.9 title 'overall', \\"
        echo "     '' skip 1 using 2:(100*\$5) with linespoints dt 2 pt 5 ps 0.7 title 'many', \\"
        echo "     '' skip 1 using 2:(100*\$6) with linespoints dt 3 pt 9 ps 0.8 title 'medium', \\"
        echo "     '' skip 1 using 2:(100*\$7) with linespoints dt 4 pt 11 ps 0.8 title 'few'"
    } | gnuplot 2>/dev/null || log "gnuplot failed; no plot"
    [ ! -f "$png.tmp" ] || mv "$png.tmp" "$png"
    return 0
}

# plot_classes CSV PNG TITLE: each class's top-1 per round (CSV: class_accuracy's), in
# percent; drawn only for 10 classes or fewer (more are unreadable as lines).  Class i of C
# is drawn (i - (C-1)/2) * 0.5 points off its value (at most ±2.25), so that classes with
# the same accuracy (several at 0 % early on) stay apart instead of hiding one another.
plot_classes() {
    local csv=$1 png=$2 title=$3 names=() plot=() i
    command -v gnuplot >/dev/null || return 0
    [ "$(wc -l < "$csv")" -ge 2 ] || return 0
    mapfile -t names < <(head -n 1 "$csv" | csv_split | tail -n +2)
    [ ${#names[@]} -ge 1 ] && [ ${#names[@]} -le 10 ] || return 0
    for ((i = 0; i < ${#names[@]}; i++)); do
        plot+=("'' skip 1 using 1:(100*\$$((i + 2)) + ($i - (${#names[@]} - 1) / 2.0) * 0.5) with linespoints lw 1.5 pt $((i % 13 + 1)) ps 0.8 title $(gp_str "${names[$i]}")")
    done
    plot[0]="$(gp_str "$csv")${plot[0]#\'\'}"
    tmp_add "$png.tmp"
    {
        echo "set terminal pngcairo size 900,540 noenhanced"
        echo "set output $(gp_str "$png.tmp")"
        echo 'set datafile separator ","; set datafile missing ""; set key outside right top noautotitle'
        echo "set title $(gp_str "$title: top-1 per class and round")"
        echo 'set xlabel "round"; set ylabel "class top-1 accuracy, % (classes drawn ±2 apart)"'
        COL=1 gp_rounds "$csv"; gp_percent
        local IFS=,; echo "plot ${plot[*]}"
    } | gnuplot 2>/dev/null || log "gnuplot failed; no per-class plot"
    [ ! -f "$png.tmp" ] || mv "$png.tmp" "$png"
    return 0
}

# summary RUN: final, mean of the last 10 rounds, best (docs/algorithms.md, evaluation) as one line.
summary() {
    awk -F, 'NR>1 && $3!="" {n++; a[n]=$3; m[n]=$5; d[n]=$6; f[n]=$7; if ($3>best) best=$3}
      END { if (!n) exit; s=0; k=0; for (i=(n>10?n-9:1); i<=n; i++) {s+=a[i]; k++}
            printf "rounds %d  final %.4f  last10 %.4f  best %.4f  many %s  medium %s  few %s\n",
                   n, a[n], s/k, best, m[n], d[n], f[n] }' "$1/metrics.csv"
}

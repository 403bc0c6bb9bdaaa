#!/usr/bin/env bash
# Cluster mode (the pipelines' --hosts, README "Cluster mode"): GNU parallel over two fake
# hosts, loopback only (tests/tools/fake-ssh, as $PARALLEL_SSH, runs each "remote" command
# on this machine and logs the host asked for).  Paths with a space (the data, the runs).
# (a) a tiny FedAvg run with --hosts 1/hostA,1/hostB ends with metrics.csv and the final model
#     byte-identical to the same run without --hosts; both hosts ran jobs; each round's
#     joblog has one line per client, every one exit 0; no job scripts are left;
# (b) a host down for its first connection: that job is retried on the other host (the
#     joblog still one line per client);
# (c) then a client whose every try fails (its shard gone): exit 1 with one line of the
#     pipeline's naming the client and the joblog; a rerun (shard back) trains only that
#     client, and the run of (b) and (c) ends identical to the reference;
# (d) TERM while a job runs: exit 143, no job left running, no temporaries;
# (e) a host whose SHELL is empty (parallel's wrapper runs nothing and reports exit 0): exit 1
#     with one line saying the job never ran;
# and --hosts/--retries usage errors.
source "$(dirname "$0")/lib.sh"
parallel --version 2>/dev/null | grep -q '^GNU parallel' || skip "no GNU parallel (Debian: parallel)"
command -v setsid >/dev/null || skip "no setsid"
B=$FEDSM_BIN
PIPE=$FEDSM_ROOT/pipelines/fedavg.sh
export PARALLEL_SSH=$FEDSM_ROOT/tests/tools/fake-ssh
unset SHELL   # as under CI or cron: the "remote" SHELL is fake-ssh's, as sshd's on a real host
"$B/gen-demo" "$T/my data" 40 10 >/dev/null 2>&1 || fail "gen-demo"
P=(--data "$T/my data" --if 4 --clients 4 --per-round 2 --rounds 3 --epochs 1 --batch 16 --width 4 --jobs 2 -q)
H=(--hosts 1/hostA,1/hostB)

# usage errors, before any work
expect_rc 2 "$PIPE" "${P[@]}" --run "$T/u" --retries 2 && expect_one_error_line
grep -q -- '--retries needs --hosts' "$T/err" || fail "--retries without --hosts: $(cat "$T/err")"
expect_rc 2 "$PIPE" "${P[@]}" --run "$T/u" "${H[@]}" --retries 0 && expect_one_error_line
expect_rc 4 "$PIPE" "${P[@]}" --run "$T/u" --hosts "@$T/no-such-file" && expect_one_error_line
[ ! -e "$T/u" ] || fail "a refused run created its run directory"

# same_as_ref RUN WHAT: RUN's final model and metrics.csv are the reference run's
same_as_ref() {
    cmp -s "$1/round-003/model.mpk.zst" "$T/ref/round-003/model.mpk.zst" || fail "$2: final model differs"
    cmp -s "$1/metrics.csv" "$T/ref/metrics.csv" || fail "$2: metrics.csv differs"
}
# joblog_ok RUN WHAT ROUND...: each ROUND's joblog.txt: the header, then one line per client
# (2), each exit 0; its job scripts removed
joblog_ok() {
    local run=$1 what=$2 r j; shift 2
    for r in "$@"; do
        j=$run/round-00$r/joblog.txt
        [ -f "$j" ] || { fail "$what: no $j"; continue; }
        head -n 1 "$j" | grep -q '^Seq.Host.*Exitval.Signal.Command$' || fail "$what: joblog header: $(head -n 1 "$j")"
        [ "$(tail -n +2 "$j" | wc -l)" = 2 ] || fail "$what: round $r's joblog has $(($(wc -l <"$j") - 1)) jobs, not 2"
        awk -F '\t' 'NR > 1 && ($7 != 0 || $8 != 0) { exit 1 }' "$j" || fail "$what: a failed job in round $r's joblog"
        [ ! -e "$run/round-00$r/jobs" ] || fail "$what: round $r's job scripts were left"
    done
}

"$PIPE" "${P[@]}" --run "$T/ref" >/dev/null || fail "the run without --hosts"

# (a) two hosts, one job at a time each
export FAKE_SSH_LOG=$T/ssh-a.log
"$PIPE" "${P[@]}" --run "$T/run a" "${H[@]}" >/dev/null || fail "(a) --hosts run"
same_as_ref "$T/run a" "(a)"
joblog_ok "$T/run a" "(a)" 1 2 3
grep -qx hostA "$T/ssh-a.log" && grep -qx hostB "$T/ssh-a.log" ||
    fail "(a) not both hosts used: $(sort "$T/ssh-a.log" | uniq -c | tr '\n' ' ')"

# (b) round 1 with hostB refusing its first connection: that job is retried on hostA
export FAKE_SSH_LOG=$T/ssh-c.log FAKE_SSH_DOWN_ONCE=hostB
C=(--run "$T/run c" "${H[@]}" --retries 2)
"$PIPE" "${P[@]}" "${C[@]}" --rounds 1 >/dev/null 2>"$T/err-b" ||
    fail "(b) a job failing once was not retried: $(grep error: "$T/err-b")"
[ -e "$T/ssh-c.log.hostB.down" ] || fail "(b) the fault was never hit"
joblog_ok "$T/run c" "(b)" 1
unset FAKE_SSH_DOWN_ONCE

# (c) client KK's shard is gone in round 2: every try fails; a rerun with it back resumes
mapfile -t sel < <("$B/aggregate" --select 2 --clients 4 --round 2 --seed 7)
kk=0${sel[0]} ok=0${sel[1]}
mv "$T/run c/partition/client-$kk.mpk.zst" "$T/shard.bak"
expect_rc 1 "$PIPE" "${P[@]}" "${C[@]}"
n=$(grep -c '^fedavg: error:' "$T/err")
[ "$n" = 1 ] || fail "(c) $n error lines of the pipeline's, not 1: $(cat "$T/err")"
line=$(grep '^fedavg: error:' "$T/err")
grep "client-$kk (on host[AB], exit [1-9]" <<<"$line" | grep -qF "joblog $T/run c/round-002/joblog.txt" ||
    fail "(c) the error line does not name client-$kk and the joblog: $line"
! grep -q "client-$ok" <<<"$line" || fail "(c) the error line names client-$ok, which succeeded: $line"
[ -f "$T/run c/round-002/update-$ok.mpk.zst" ] || fail "(c) client $ok's update is missing after the failed round"
[ ! -e "$T/run c/round-002/model.mpk.zst" ] || fail "(c) the failed round was aggregated"
mv "$T/shard.bak" "$T/run c/partition/client-$kk.mpk.zst"
"$PIPE" "${P[@]}" "${C[@]}" >/dev/null 2>"$T/err-c" || fail "(c) rerun: $(grep error: "$T/err-c")"
same_as_ref "$T/run c" "(b, c)"
j="$T/run c/round-002/joblog.txt"   # the failed batch (2 jobs), then the rerun's (client KK alone)
[ "$(tail -n +2 "$j" | wc -l)" = 3 ] && tail -n 1 "$j" | grep -q "client-$kk.sh'\?$" &&
    awk -F '\t' 'END { exit !($7 == 0) }' "$j" || fail "(c) the rerun did not resume with client $kk alone: $(cat "$j")"

# (d) TERM while a job of round 1 runs on a host
export FAKE_SSH_LOG=$T/ssh-d.log
setsid "$PIPE" "${P[@]}" --run "$T/run d" "${H[@]}" >/dev/null 2>&1 &
pid=$!
for i in $(seq 1 1200); do pgrep -f "$T/run d/round-001/update-" >/dev/null && break; sleep 0.05; done
pgrep -f "$T/run d/round-001/update-" >/dev/null || fail "(d) no job ever started"
kill -TERM $pid; wait $pid; rc=$?
[ $rc = 143 ] || fail "(d) a TERMed --hosts run exits 143, got $rc"
for i in $(seq 1 100); do pgrep -f "$T/run d" >/dev/null || break; sleep 0.1; done
left=$(pgrep -af "$T/run d"); [ -z "$left" ] || fail "(d) jobs still running after TERM: $left"
left=$(find "$T/run d" -name '*.tmp*' -o -name jobs); [ -z "$left" ] || fail "(d) left by the TERMed run: $left"

# (e) hosts without SHELL: parallel calls every job done, none ran
FAKE_SSH_NO_SHELL=1 expect_rc 1 "$PIPE" "${P[@]}" --run "$T/run e" "${H[@]}" --rounds 1 && expect_one_error_line
grep -q "client-0[0-3]: GNU parallel reported success but the job never ran" "$T/err" ||
    fail "(e) no line saying the job never ran: $(cat "$T/err")"
done_tests

#!/usr/bin/env bash
# pipelines/compare.sh - the methods side by side on one dataset and imbalance factor:
# FedAvg, then CReFF and FedSM on the same FedAvg body (--body: exact, neither feeds its
# head back into training), then the pictures a long-tail comparison needs: top-1 per round
# of every method on one plot, and per-class accuracy against the class's training count
# (head to tail) at the last evaluated round, beside a Markdown table (table.sh).
#   compare.sh --data D --prefix runs/c10-if100 [--relevance REL] [--retrain-rounds N]
#              [--methods "fedavg creff fedsm"] [fedavg.sh options...]
#   compare.sh --plot-only --out DIR RUN...      (pictures and table of finished runs)
source "$(dirname "$0")/common.sh"

usage() {
    cat <<USAGE
usage: compare.sh --data PATH --prefix P [--relevance REL] [--retrain-rounds N]
                  [--methods "fedavg creff fedsm"] [fedavg.sh options]
       compare.sh --plot-only --out DIR RUN...
Runs FedAvg into P-fedavg, then CReFF (P-creff) and FedSM (P-fedsm) on its body, and writes
P-compare/{accuracy.png,per-class.png,table.md}.  Every other option goes to every method
(fedavg.sh --help lists them: --if, --rounds, --epochs, --jobs, --seed, --hosts, ...).
  --prefix P           run directories P-fedavg, P-creff, P-fedsm and P-compare
  --relevance REL      FedSM's class relevance (clip-embed); without it FedSM uses
                       --select uniform
  --retrain-rounds N   FedSM's retraining rounds (default: fedsm.sh's)
  --methods LIST       which of fedavg, creff, fedsm to run (default all three; fedavg
                       always runs: it is the others' body)
  --plot-only          only draw and tabulate the given run directories into --out DIR
USAGE
}

PREFIX= REL= RR= METHODS="fedavg creff fedsm" PLOT_ONLY=0 OUT= PASS=()
while [ $# -gt 0 ]; do
    case $1 in
    -h|--help) usage; exit 0 ;;
    --prefix) need_value "$@"; PREFIX=$2; shift ;;
    --relevance) need_value "$@"; REL=$2; shift ;;
    --retrain-rounds) need_value "$@"; RR=$2; shift ;;
    --methods) need_value "$@"; METHODS=$2; shift ;;
    --plot-only) PLOT_ONLY=1 ;;
    --out) need_value "$@"; OUT=$2; shift ;;
    *) PASS+=("$1") ;;
    esac
    shift
done

# per_class_table RUN: "count,accuracy,class" per class at RUN's last evaluated round.
per_class_table() {
    local run=$1 last r
    r=$(awk -F, 'NR > 1 && $2 ~ /^[0-9]+$/ { r = $2 } END { print r }' "$run/metrics.csv" 2>/dev/null)
    last=$(printf '%s/round-%03d/metrics.json' "$run" "${r:-0}")
    [ -n "$r" ] && [ -f "$last" ] || die "$run has no evaluated round" 3
    /usr/bin/python3 - "$run/partition/partition.csv" "$last" <<'PY' 2>/dev/null || die "cannot read the per-class accuracies of $run (needs /usr/bin/python3)" 4
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1])))
names = rows[0][3:]
clients = [r for r in rows[1:] if r and r[0] != "total"]   # the last row is the total
counts = [sum(int(r[3 + j]) for r in clients) for j in range(len(names))]
acc = json.loads(open(sys.argv[2]).readline())["per_class"]
for n, c, a in sorted(zip(names, counts, acc), key=lambda t: -t[1]):
    print("%d,%.4f,%s" % (c, a, n))
PY
}

# runs_what RUN...: "LABEL, LABEL... on DATASET, IF N" for a plot title (the runs' labels
# in metrics.csv, each once; their datasets and IFs, each once).
runs_what() {
    local run labels=() sets=() ifs=() x
    for run in "$@"; do
        x=$(awk -F, 'NR == 2 { print $1 }' "$run/metrics.csv"); [[ " ${labels[*]} " == *" $x "* ]] || labels+=("$x")
        x=$(run_dataset "$run"); [[ " ${sets[*]} " == *" $x "* ]] || sets+=("$x")
        x=$(run_conf "$run" if); [[ " ${ifs[*]} " == *" $x "* ]] || ifs+=("$x")
    done
    local IFS=/; x=" on ${sets[*]}, IF ${ifs[*]}"
    printf '%s' "${labels[0]}"; [ ${#labels[@]} = 1 ] || printf ', %s' "${labels[@]:1}"
    printf '%s' "$x"
}

draw() { # OUT RUN...
    local out=$1 run i; shift
    mkdir -p "$out" || die "cannot create $out" 4
    "$(dirname "$0")/table.sh" "$@" >"$out/table.md.tmp" && mv "$out/table.md.tmp" "$out/table.md"
    for run in "$@"; do per_class_table "$run" >"$out/$(basename "$run").per-class.csv"; done
    command -v gnuplot >/dev/null || { log "no gnuplot: table only ($out/table.md)"; return 0; }
    local plot=() pc=() csvs=() i=0 what
    for run in "$@"; do
        i=$((i + 1)); csvs+=("$run/metrics.csv")
        plot+=("$(gp_str "$run/metrics.csv") skip 1 using 2:(100*\$3) with linespoints lw 2 pt $((i % 13 + 1)) ps 0.8 title $(gp_str "$(basename "$run")")")
        pc+=("$(gp_str "$out/$(basename "$run").per-class.csv") using 1:(100*\$2) with linespoints pt $((i % 13 + 1)) ps 0.8 title $(gp_str "$(basename "$run")")")
    done
    what=$(runs_what "$@")
    {
        echo "set terminal pngcairo size 900,540 noenhanced"
        echo "set output $(gp_str "$out/accuracy.png.tmp")"
        echo 'set datafile separator ","; set datafile missing ""; set key outside right top noautotitle'
        echo "set title $(gp_str "top-1 per round: $what")"
        echo 'set xlabel "round"; set ylabel "top-1 accuracy, % (balanced test set)"'
        gp_rounds "${csvs[@]}"; gp_percent
        local IFS=,; echo "plot ${plot[*]}"
    } | gnuplot 2>/dev/null && mv "$out/accuracy.png.tmp" "$out/accuracy.png"
    {
        echo "set terminal pngcairo size 900,540 noenhanced"
        echo "set output $(gp_str "$out/per-class.png.tmp")"
        echo 'set datafile separator ","; set key outside right top; set logscale x'
        echo "set title $(gp_str "per-class top-1 at the last evaluated round vs training images: $what")"
        echo 'set xlabel "training images of the class (log scale; head right, tail left)"; set ylabel "class top-1 accuracy, %"'
        gp_percent
        local IFS=,; echo "plot ${pc[*]}"
    } | gnuplot 2>/dev/null && mv "$out/per-class.png.tmp" "$out/per-class.png"
    rm -f "$out/accuracy.png.tmp" "$out/per-class.png.tmp"
    log "wrote $out/table.md, $out/accuracy.png, $out/per-class.png"
}

if [ "$PLOT_ONLY" = 1 ]; then
    [ -n "$OUT" ] || die "--plot-only needs --out DIR" 2
    [ ${#PASS[@]} -gt 0 ] || die "--plot-only needs run directories" 2
    draw "$OUT" "${PASS[@]}"
    cat "$OUT/table.md"
    exit 0
fi
[ -n "$PREFIX" ] || die "--prefix P is required (try compare.sh --help)" 2
# every option is checked before FedAvg starts: compare's own, and the passed ones against
# the common options every method takes (a method's own option would stop the next method)
for m in $METHODS; do
    case $m in fedavg|creff|fedsm) ;; *) die "--methods: unknown method '$m' (fedavg, creff, fedsm)" 2 ;; esac
done
[ -z "$RR" ] || { check_value --retrain-rounds int "$RR"; RR=$OPT_VALUE; }
[ -z "$REL" ] || [ -f "$REL" ] || die "--relevance $REL does not exist" 4
(parse_options "${PASS[@]}") || exit $?
here=$(dirname "$0")
runs=("$PREFIX-fedavg")
"$here/fedavg.sh" "${PASS[@]}" --run "$PREFIX-fedavg" --label fedavg || exit $?
for m in $METHODS; do
    case $m in
    fedavg) ;;
    creff) "$here/creff.sh" "${PASS[@]}" --run "$PREFIX-creff" --label creff --body "$PREFIX-fedavg" || exit $?
           runs+=("$PREFIX-creff") ;;
    fedsm) sel=(--select uniform); [ -z "$REL" ] || sel=(--relevance "$REL")
           "$here/fedsm.sh" "${PASS[@]}" --run "$PREFIX-fedsm" --label fedsm --body "$PREFIX-fedavg" \
               "${sel[@]}" ${RR:+--retrain-rounds "$RR"} || exit $?
           runs+=("$PREFIX-fedsm") ;;
    esac
done
draw "$PREFIX-compare" "${runs[@]}"
cat "$PREFIX-compare/table.md"

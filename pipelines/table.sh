#!/usr/bin/env bash
# pipelines/table.sh [--per-run] RUN... - a Markdown results table from run directories:
# method (the run's label), run folder, dataset, IF, width, seed, last evaluated round, final
# top-1, mean of the last 10 evaluated rounds, best, and many/medium/few of the final round
# (percent).  Runs that differ only by their seed (config.txt otherwise equal, same label and
# last round) share one row: each number is the mean ± the sample standard deviation over
# them, and the seed column lists the seeds.
source "$(dirname "$0")/common.sh"
usage() {
    cat <<USAGE
usage: table.sh [--per-run] RUN...
One Markdown table row per run directory (a fedavg.sh/creff.sh/... --run folder): method
(its label in metrics.csv), run folder, dataset, IF, width, seed, last evaluated round,
final top-1, mean of the last 10 evaluated rounds, best, and many/medium/few of the final
round, in percent, from RUN/metrics.csv and RUN/config.txt.
Runs that differ only by --seed (same options, label and last round) are one row of
"mean ± std" (sample standard deviation over the seeds, listed in the seed column).
  --per-run    one row per run, seeds never merged
  -h, --help
example: table.sh runs/c10-if100-s7 runs/c10-if100-s8 runs/c10-if100-s7-creff
USAGE
}
PER_RUN=0
while [ $# -gt 0 ]; do
    case $1 in
    -h|--help) usage; exit 0 ;;
    --per-run) PER_RUN=1; shift ;;
    --) shift; break ;;
    -*) die "unknown option '$1' (try table.sh --help)" 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || die "no run directory given (usage: table.sh RUN...)" 2
for run in "$@"; do
    [ -f "$run/metrics.csv" ] || die "$run has no metrics.csv" 4
    awk -F, 'NR > 1 && $3 != "" { n++ } END { exit !n }' "$run/metrics.csv" || die "$run has no evaluated round" 3
done
# cell S: S for one table cell (control characters shown as '?', '|' escaped)
cell() { local s; s=$(one_line "$1"); printf '%s' "${s//|/\\|}"; }
# one tab-separated line per run: group key, the text columns, then the numbers (fractions)
rows() {
    local run key label width i=0
    for run in "$@"; do
        i=$((i + 1))
        label=$(awk -F, 'NR == 2 { print $1 }' "$run/metrics.csv")
        width=$(run_conf "$run" width); [ -n "$width" ] || [ ! -f "$run/config.txt" ] || width=64
        if [ "$PER_RUN" = 1 ] || [ ! -f "$run/config.txt" ]; then key=run-$i
        else key=$({ echo "label=$label"; grep -v '^seed=' "$run/config.txt" | config_norm; } | sha256sum | cut -c1-16)
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t' "$key" "$(cell "$label")" "$(cell "$(basename -- "$run")")" \
            "$(cell "$(run_dataset "$run")")" "$(cell "$(run_conf "$run" if)")" "$(cell "$width")" \
            "$(cell "$(run_conf "$run" seed)")"
        awk -F, 'NR > 1 && $3 != "" { n++; a[n] = $3; r[n] = $2; m[n] = $5; d[n] = $6; f[n] = $7; if ($3 > best) best = $3 }
          END { s = 0; k = 0; for (i = (n > 10 ? n - 9 : 1); i <= n; i++) { s += a[i]; k++ }
                printf "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r[n], a[n], s / k, best, m[n], d[n], f[n] }' "$run/metrics.csv"
    done
}
echo "| method | run | dataset | IF | width | seed | rounds | final | last 10 | best | many | medium | few |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
# group by key and last round (first appearance order); one seed: the numbers, several:
# mean ± sample std, '–' where a run has no value (e.g. no class is "few")
rows "$@" | awk -F'\t' '
  function pct(x) { return x == "" ? "–" : sprintf("%.2f", 100 * x) }
  { g = $1 "\t" $8; if (!(g in n)) { order[++G] = g; first[g] = $0 }
    i = ++n[g]; seeds[g] = seeds[g] (i > 1 ? ", " : "") $7; runs[g] = runs[g] (i > 1 ? ", " : "") $3
    for (c = 9; c <= 14; c++) { v[g, c, i] = $c; if ($c == "") miss[g, c] = 1 } }
  END { for (k = 1; k <= G; k++) { g = order[k]; split(first[g], f, "\t"); m = n[g]
          line = "| " f[2] " | " runs[g] " | " f[4] " | " f[5] " | " f[6] " | " seeds[g] " | " f[8]
          for (c = 9; c <= 14; c++) {
              if (m == 1 || miss[g, c]) { line = line " | " (m == 1 ? pct(v[g, c, 1]) : "–"); continue }
              s = 0; for (i = 1; i <= m; i++) s += v[g, c, i]; mu = s / m
              q = 0; for (i = 1; i <= m; i++) q += (v[g, c, i] - mu) ^ 2
              line = line sprintf(" | %.2f ± %.2f", 100 * mu, 100 * sqrt(q / (m - 1))) }
          print line " |" } }'

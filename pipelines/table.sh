#!/usr/bin/env bash
# pipelines/table.sh RUN... - one Markdown table row per run directory: final top-1, mean of
# the last 10 evaluated rounds, best, and many/medium/few of the final round (percent).
source "$(dirname "$0")/common.sh"
usage() {
    cat <<USAGE
usage: table.sh RUN...
One Markdown table row per run directory (a fedavg.sh/creff.sh/... --run folder): its name,
imbalance factor, last evaluated round, final top-1, mean of the last 10 evaluated rounds,
best, and many/medium/few of the final round, in percent, from RUN/metrics.csv.
USAGE
}
case ${1:-} in -h|--help) usage; exit 0 ;; -*) die "unknown option '$1' (try table.sh --help)" 2 ;; esac
[ $# -gt 0 ] || die "no run directory given (usage: table.sh RUN...)" 2
for run in "$@"; do
    [ -f "$run/metrics.csv" ] || die "$run has no metrics.csv" 4
    awk -F, 'NR > 1 && $3 != "" { n++ } END { exit !n }' "$run/metrics.csv" || die "$run has no evaluated round" 3
done
echo "| run | IF | rounds | final | last 10 | best | many | medium | few |"
echo "|---|---|---|---|---|---|---|---|---|"
for run in "$@"; do
    # names go through the environment (awk -v would expand backslashes); '|' is escaped
    name=$(one_line "$(basename -- "$run")") if_=$(sed -n 's/^if=//p' "$run/config.txt" 2>/dev/null || true)
    TABLE_RUN=${name//|/\\|} TABLE_IF=$(one_line "${if_//|/\\|}") awk -F, '
      function pct(x) { return x == "" ? "–" : sprintf("%.2f", 100 * x) }
      NR > 1 && $3 != "" { n++; a[n] = $3; r[n] = $2; m[n] = $5; d[n] = $6; f[n] = $7; if ($3 > best) best = $3 }
      END { s = 0; k = 0; for (i = (n > 10 ? n - 9 : 1); i <= n; i++) { s += a[i]; k++ }
            printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", ENVIRON["TABLE_RUN"], ENVIRON["TABLE_IF"],
                   r[n], pct(a[n]), pct(s / k), pct(best), pct(m[n]), pct(d[n]), pct(f[n]) }' "$run/metrics.csv"
done

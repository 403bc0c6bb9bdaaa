#!/usr/bin/env bash
# pipelines/table.sh RUN... - one Markdown table row per run directory: final top-1, mean of
# the last 10 evaluated rounds, best, and many/medium/few of the final round (percent).
source "$(dirname "$0")/common.sh"
[ $# -gt 0 ] || die "usage: table.sh RUN..." 2
echo "| run | IF | rounds | final | last 10 | best | many | medium | few |"
echo "|---|---|---|---|---|---|---|---|---|"
for run in "$@"; do
    [ -f "$run/metrics.csv" ] || die "$run has no metrics.csv" 4
    if_=$(sed -n 's/^if=//p' "$run/config.txt")
    awk -F, -v run="$(basename "$run")" -v IF="$if_" '
      function pct(x) { return x == "" ? "–" : sprintf("%.2f", 100 * x) }
      NR > 1 && $3 != "" { n++; a[n] = $3; r[n] = $2; m[n] = $5; d[n] = $6; f[n] = $7; if ($3 > best) best = $3 }
      END { s = 0; k = 0; for (i = (n > 10 ? n - 9 : 1); i <= n; i++) { s += a[i]; k++ }
            printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", run, IF, r[n], pct(a[n]), pct(s / k), pct(best), pct(m[n]), pct(d[n]), pct(f[n]) }' "$run/metrics.csv"
done

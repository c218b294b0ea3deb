#!/usr/bin/env bash
# Two builds of sluice side by side on the main job (jobs/flights.toml, 336,776 flights):
# runs A B A B ... in one invocation so machine noise hits both alike, and prints each run's
# wall time and peak memory, the medians, and B's ratio to A.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [PAIRS]      (default 5 pairs)
#
# Build the old binary from another commit, e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
# Runs in a scratch copy of the project; each run starts from an empty warehouse.
set -euo pipefail
cd "$(dirname "$0")/.."
a="$(realpath "$1")"
b="$(realpath "$2")"
pairs="${3:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r sluice.toml mappings jobs samples "$work/"
cd "$work"
printf '%-6s %-4s %-8s %-13s %-9s %-10s\n' pair bin wall_s peak_rss_mib written quarantined
declare -A walls rss
for i in $(seq 1 "$pairs"); do
  for side in A B; do
    bin="$a"; [ "$side" = B ] && bin="$b"
    rm -rf warehouse .sluice
    /usr/bin/time -f '%e %M' -o time.txt "$bin" run flights --json > report.json || true
    read -r wall kib < time.txt
    counts=$(python3 -c 'import json;r=json.load(open("report.json"))["rows"];print(r["written"], r["quarantined"])')
    mib=$(awk "BEGIN{printf \"%.1f\", $kib/1024}")
    printf '%-6s %-4s %-8s %-13s %-9s %-10s\n' "$i" "$side" "$wall" "$mib" $counts
    walls[$side]+="$wall "
    rss[$side]+="$mib "
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
wa=$(median "${walls[A]}"); wb=$(median "${walls[B]}")
ra=$(median "${rss[A]}"); rb=$(median "${rss[B]}")
printf '\nmedian A: %s s, %s MiB\nmedian B: %s s, %s MiB\nB/A: wall %.3f, peak RSS %.3f\n' \
  "$wa" "$ra" "$wb" "$rb" "$(awk "BEGIN{print $wb/$wa}")" "$(awk "BEGIN{print $rb/$ra}")"

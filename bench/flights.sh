#!/usr/bin/env bash
# Wall time and peak memory of the main job (jobs/flights.toml, 336,776 flights), release build.
#
#   bash bench/flights.sh [RUNS]        (default 5 runs)
#
# Runs in a scratch copy of the project so the repository's warehouse is untouched, and prints
# one row per run plus the median. Numbers depend on the machine: compare runs made side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --quiet
bin="$PWD/target/release/sluice"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r sluice.toml mappings jobs samples "$work/"
cd "$work"
printf '%-5s %-10s %-14s %-10s %-12s\n' run wall_s peak_rss_mib rows_read status
walls=()
rss=()
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f '%e %M' -o time.txt "$bin" run flights --json > report.json || true
  read -r wall kib < time.txt
  read_rows=$(python3 -c 'import json;print(json.load(open("report.json"))["rows"]["read"])')
  status=$(python3 -c 'import json;print(json.load(open("report.json"))["status"])')
  mib=$(awk "BEGIN{printf \"%.1f\", $kib/1024}")
  printf '%-5s %-10s %-14s %-10s %-12s\n' "$i" "$wall" "$mib" "$read_rows" "$status"
  walls+=("$wall")
  rss+=("$mib")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
printf '%-5s %-10s %-14s\n' median "$(median "${walls[@]}")" "$(median "${rss[@]}")"

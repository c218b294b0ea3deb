#!/usr/bin/env bash
# The flights job on local files against the same job on the local S3-compatible server
# (moto, tools/s3/server.sh), side by side: wall time and peak memory, interleaved runs.
#
#   bash bench/lake.sh [RUNS]        (default 5 rounds)
#
#   local→parquet  jobs/flights.toml: local CSVs → local Parquet folder
#   local→delta    the same sources → a local Delta table
#   s3→delta       jobs/flights_lake.toml: CSVs in bucket `lake` → a Delta table there
#
# moto runs in Python on the same 2 cores, so the s3 figure includes the server's own work.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --quiet
bash samples/lake/load.sh > /dev/null
bin="$PWD/target/release/sluice"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r sluice.toml mappings jobs samples "$work/"
cd "$work"
sed -e 's/format = "parquet"/format = "delta"/' -e 's/table = "flights"/table = "flights_delta"/' \
  jobs/flights.toml > jobs/flights_delta.toml
export LAKE_KEY_ID=local LAKE_SECRET=local
declare -A walls rss
printf '%-15s %-5s %-8s %-13s %-8s\n' job round wall_s peak_rss_mib rows
for i in $(seq 1 "$runs"); do
  for job in flights flights_delta flights_lake; do
    /usr/bin/time -f '%e %M' -o time.txt "$bin" run "$job" --json > report.json
    read -r wall kib < time.txt
    rows=$(python3 -c 'import json;print(json.load(open("report.json"))["rows"]["written"])')
    mib=$(awk "BEGIN{printf \"%.0f\", $kib/1024}")
    printf '%-15s %-5s %-8s %-13s %-8s\n' "$job" "$i" "$wall" "$mib" "$rows"
    walls[$job]+="$wall "
    rss[$job]+="$mib "
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
printf '%-15s %-14s %-18s\n' job median_wall_s median_peak_mib
for job in flights flights_delta flights_lake; do
  printf '%-15s %-14s %-18s\n' "$job" "$(median "${walls[$job]}")" "$(median "${rss[$job]}")"
done

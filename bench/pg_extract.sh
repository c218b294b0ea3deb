#!/usr/bin/env bash
# Extracting a large PostgreSQL table: wall time and peak memory by table size.
#
#   bash bench/pg_extract.sh [ROWS...]      (default: 1000000 10000000)
#
# For each size, creates sluice_bench.events (id, name, amount numeric(12,2), flag,
# happened_at timestamptz) with generate_series, then runs the `extract` job of
# bench/events (PostgreSQL -> canonical `event` -> Parquet) under /usr/bin/time. Bounded
# memory means the peak RSS stays about the same as the table grows.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=test
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
cargo build --release --quiet --bin sluice
sluice="$(realpath "$target/release/sluice")"
psql -qAt -c "CREATE SCHEMA IF NOT EXISTS sluice_bench" 2>/dev/null
printf '| rows | wall time | rows/s | peak RSS | Parquet written |\n|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
  psql -qAt -c "DROP TABLE IF EXISTS sluice_bench.events;
    CREATE TABLE sluice_bench.events AS
      SELECT g::bigint AS id, 'event ' || g AS name, (g % 100000) / 100.0 AS amount,
             g % 2 = 0 AS flag, timestamptz '2024-01-01' + g * interval '1 second' AS happened_at
      FROM generate_series(1, $n) g;
    ALTER TABLE sluice_bench.events ALTER COLUMN amount TYPE numeric(12,2); ANALYZE sluice_bench.events"
  t0=$(date +%s.%N)
  (cd bench/events && /usr/bin/time -f "%M" -o /tmp/sluice_extract_rss "$sluice" run extract --json > /tmp/sluice_extract.json)
  t1=$(date +%s.%N)
  wall=$(echo "$t1 - $t0" | bc)
  rss=$(cat /tmp/sluice_extract_rss)
  written=$(python3 -c "import json;print(json.load(open('/tmp/sluice_extract.json'))['rows']['written'])")
  printf '| %s | %.2f s | %.0f | %.0f MiB | %s rows, %s |\n' "$n" "$wall" "$(echo "$n / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$written" "$(du -sh bench/events/warehouse/events | cut -f1)"
done

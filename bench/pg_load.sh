#!/usr/bin/env bash
# PostgreSQL bulk load: Sluice against `psql \copy`, side by side in one run.
#
#   bash bench/pg_load.sh [SCALE_FACTOR] [ROUNDS]     (defaults: 1 and 3)
#
# Both load the same TPC-H `lineitem` rows (tpchgen; scale factor 1 = 6,001,215 rows) from the
# same CSV file into tables with the same columns, NOT NULL constraints and primary key:
#   sluice  CSV -> parse, map to the canonical `lineitem` model, row rules -> COPY (FORMAT binary)
#   psql    CSV -> \copy (FORMAT csv)
# Rounds alternate which goes first; each load starts from an empty table after a CHECKPOINT.
# Prints wall time (median) and Sluice's peak RSS, and the ratio sluice/psql.
set -euo pipefail
cd "$(dirname "$0")/.."
sf="${1:-1}"
rounds="${2:-3}"
target="${CARGO_TARGET_DIR:-target}"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=test

cargo build --release --quiet --bin sluice --example tpch_lineitem_csv
mkdir -p "$target/bench-data"
csv="$(realpath "$target/bench-data")/lineitem-sf$sf.csv"
[ -f "$csv" ] || "$target/release/examples/tpch_lineitem_csv" "$sf" "$csv"
rows=$(($(wc -l < "$csv") - 1))
export LINEITEM_CSV="$csv"
sluice="$(realpath "$target/release/sluice")"
proj=bench/lineitem

psql -qAt -c "DROP SCHEMA IF EXISTS sluice_bench CASCADE; CREATE SCHEMA sluice_bench" 2>/dev/null
# A first load creates Sluice's table from the model; psql's copies its definition.
(cd "$proj" && "$sluice" run load_pg >/dev/null)
psql -qAt -c "CREATE TABLE sluice_bench.lineitem_psql (LIKE sluice_bench.lineitem_sluice INCLUDING ALL)"

run_sluice() {
  psql -qAt -c "TRUNCATE sluice_bench.lineitem_sluice; CHECKPOINT"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$proj" && /usr/bin/time -f "%M" -o /tmp/sluice_bench_rss "$sluice" run load_pg >/dev/null)
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $(cat /tmp/sluice_bench_rss)"
}
run_psql() {
  psql -qAt -c "TRUNCATE sluice_bench.lineitem_psql; CHECKPOINT"
  local t0 t1
  t0=$(date +%s.%N)
  psql -qAt -v ON_ERROR_STOP=1 -c "\\copy sluice_bench.lineitem_psql ($columns) FROM '$csv' (FORMAT csv, HEADER true)" >/dev/null
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc)"
}

# The CSV's column order (tpchgen's header), as the canonical table names them.
columns="order_key, part_key, supp_key, line_number, quantity, extended_price, discount, tax, return_flag, line_status, ship_date, commit_date, receipt_date, ship_instruct, ship_mode, comment"
s_times=(); p_times=(); rss=()
for i in $(seq 1 "$rounds"); do
  if (( i % 2 )); then
    read -r t m < <(run_sluice); s_times+=("$t"); rss+=("$m")
    p_times+=("$(run_psql)")
  else
    p_times+=("$(run_psql)")
    read -r t m < <(run_sluice); s_times+=("$t"); rss+=("$m")
  fi
  echo "round $i: sluice ${s_times[-1]} s, psql ${p_times[-1]} s" >&2
done
s_rows=$(psql -qAt -c "SELECT count(*) FROM sluice_bench.lineitem_sluice")
p_rows=$(psql -qAt -c "SELECT count(*) FROM sluice_bench.lineitem_psql")
same=$(psql -qAt -c "SELECT count(*) FROM (SELECT * FROM sluice_bench.lineitem_sluice EXCEPT SELECT * FROM sluice_bench.lineitem_psql) d")
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms=$(median "${s_times[@]}"); mp=$(median "${p_times[@]}"); mr=$(median "${rss[@]}")
echo
echo "TPC-H lineitem, scale factor $sf: $rows rows in the CSV ($(du -h "$csv" | cut -f1)); $rounds rounds, medians"
printf '| loader | rows loaded | wall time | rows/s | peak RSS |\n|---|---|---|---|---|\n'
printf '| psql \\copy (CSV) | %s | %.2f s | %.0f | - |\n' "$p_rows" "$mp" "$(echo "$p_rows / $mp" | bc -l)"
printf '| sluice run (CSV -> model -> COPY binary) | %s | %.2f s | %.0f | %.0f MiB |\n' "$s_rows" "$ms" "$(echo "$s_rows / $ms" | bc -l)" "$(echo "$mr / 1024" | bc -l)"
printf 'ratio sluice / psql: %.2f (target: at most 1.30)\n' "$(echo "$ms / $mp" | bc -l)"
echo "rows in Sluice's table missing from psql's: $same"

#!/usr/bin/env bash
# What a scheduler pays per job before any data moves (issue 13, "small jobs are cheap"):
#
#   bash bench/startup.sh [RUNS]        (default 10; needs a release build, or SLUICE=<binary>)
#
# Prints median wall time and peak RSS, over RUNS runs in a scratch copy of the project, of:
#   - `sluice run carriers`: the bundled 16-row job (CSV in, one mapping, Parquet out,
#     commit, report): config load, compile, plan, run and commit;
#   - `sluice validate` of the project's file jobs plus 100 copies of that job (103 jobs);
#   - `sluice --version`: the process alone;
#   - DuckDB (Python package, in the benchmark's virtual environment) doing the same 16-row
#     CSV to Parquet, and `python3 -c pass`, the interpreter alone, to subtract.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
sluice="$(realpath "${SLUICE:-target/release/sluice}")"
venv="$HOME/.cache/sluice/tpchvenv"
bash tools/venv.sh "$venv" bench/tpch/requirements.txt
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r sluice.toml mappings jobs samples "$work/"
cd "$work"
# Jobs on file sources only: the database and object-store jobs need their servers.
rm jobs/flights_from_postgres.toml jobs/flights_to_postgres.toml jobs/flights_lake.toml
for i in $(seq -w 1 100); do
  sed "s/^table = \"carriers\"/table = \"carriers_$i\"/" jobs/carriers.toml > "jobs/carriers_$i.toml"
done

# median wall (s) and peak RSS (MiB) of `$@`, RUNS times; the output goes to out.txt.
measure() {
  local walls="" rss=""
  for _ in $(seq 1 "$runs"); do
    /usr/bin/time -f '%e %M' -o time.txt "$@" > out.txt 2>&1 || { cat out.txt; exit 1; }
    read -r w k < time.txt
    walls+="$w "; rss+="$k "
  done
  local mw mk
  mw=$(printf '%s\n' $walls | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  mk=$(printf '%s\n' $rss | sort -g | awk '{a[NR]=$1} END{printf "%.0f", a[int((NR+1)/2)]/1024}')
  echo "$mw $mk"
}

duck="import duckdb; duckdb.sql(\"COPY (SELECT * FROM read_csv('samples/nycflights13/airlines.csv.gz')) TO 'carriers.parquet' (FORMAT parquet)\")"
printf '%-52s %-10s %s\n' "what (median of $runs)" wall_s peak_rss_mib
row() { printf '%-52s %-10s %s\n' "$1" $2; }
row "sluice --version" "$(measure "$sluice" --version)"
row "sluice run carriers (16 rows, commit, report)" "$(measure "$sluice" run carriers)"
row "sluice validate (103 jobs)" "$(measure "$sluice" validate)"
row "python3 -c pass (interpreter alone)" "$(measure "$venv/bin/python" -c pass)"
row "DuckDB via Python: the same 16 rows CSV -> Parquet" "$(measure "$venv/bin/python" -c "$duck")"

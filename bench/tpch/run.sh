#!/usr/bin/env bash
# The side-by-side benchmark of issue 13: two jobs on TPC-H data, run by Sluice, the same job
# hand-written on DataFusion in Rust, DuckDB and Polars in turn (A B C D, A B C D, ... in one
# invocation, so machine noise hits all alike), each
# tool's output checked to hold the same rows as Sluice's, and a table of medians printed.
#
#   bash bench/tpch/run.sh [SCALE_FACTOR] [ROUNDS]        (default 1 and 5)
#
# Jobs: `convert` (lineitem CSV → zstd Parquet, every column typed) and `etl` (lineitem with a
# seeded 2.5% of rows broken, joined to orders → canonical order lines, four rules,
# quarantine, zstd Parquet); Sluice's are bench/tpch/project/jobs/*.toml, DataFusion's
# bench/tpch/datafusion.rs, DuckDB's and Polars' bench/tpch/peers.py. Data (generated once per scale factor by tpchgen-cli, from PyPI) goes
# to bench/tpch/data/sf<SF>/; the Python packages into a virtual environment at
# $SLUICE_TPCH_VENV (default ~/.cache/sluice/tpchvenv). Sluice is target/release/sluice
# (build it first: cargo build --release).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sf="${1:-1}"
rounds="${2:-5}"
venv="${SLUICE_TPCH_VENV:-$HOME/.cache/sluice/tpchvenv}"
bash "$here/../../tools/venv.sh" "$venv" "$here/requirements.txt"
data="$here/data/sf$sf"
if [ ! -f "$data/lineitem_dirty.csv" ]; then
  echo "== generating TPC-H lineitem and orders at scale factor $sf into $data"
  mkdir -p "$data"
  "$venv/bin/tpchgen-cli" csv -s "$sf" --tables=lineitem,orders --output-dir="$data"
  "$venv/bin/python" "$here/corrupt.py" "$data/lineitem.csv" "$data/lineitem_dirty.csv"
fi
echo "== building the hand-written DataFusion job (bench/tpch/datafusion.rs)"
(cd "$here/../.." && cargo build --release --quiet --example tpch_datafusion --features bench-peers)
root="$(realpath "$here/../..")"
exec "$venv/bin/python" "$here/run.py" "$root/target/release/sluice" \
  "$root/target/release/examples/tpch_datafusion" "$data" "$rounds"

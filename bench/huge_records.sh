#!/usr/bin/env bash
# Peak memory of CSV files with one huge record (issue 9): a 64 KiB and a 256 KiB field first
# in 20,000 rows (type inference samples them), a 50 MB field among normal rows,
# and a file that is one 1 GB line, each read with the default max_record_bytes (16 MiB: the
# record is quarantined without being read whole) and, for the 50 MB field, with a limit above
# it (the record is read and loaded). Release build.
#
#   bash bench/huge_records.sh
#
# Writes ~1.1 GB of scratch files under a temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/sluice"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir -p mappings/canonical jobs
cat > mappings/canonical/note.toml <<'TOML'
name = "note"
version = "1.0.0"

[fields.id]
type = "int64"
primary_key = true

[fields.body]
type = "string"
TOML
cat > mappings/m.toml <<'TOML'
model = "note@1"
from = "src"

[fields]
id = "src.id"
body = "src.body"
TOML
job() {
  cat > jobs/j.toml <<TOML
mapping = "m"

[sources.src]
format = "csv"
path = "$1"

[target]
format = "parquet"
table = "notes"
mode = "overwrite"
TOML
}
project() {
  printf 'name = "huge"\n\n[defaults]\nmax_record_bytes = %s\n' "$1" > sluice.toml
}

python3 - <<'PY'
import os
with open("field50.csv", "w") as f:
    f.write("id,body\n")
    for i in range(1, 1001):
        f.write(f"{i},row {i}\n")
    f.write("1001," + "x" * (50 * 1000 * 1000) + "\n")
    for i in range(1002, 2001):
        f.write(f"{i},row {i}\n")
for name, size in (("field64k.csv", 64 * 1024), ("field256k.csv", 256 * 1024)):
    with open(name, "w") as f:
        f.write("id,body\n")
        f.write("1," + "z" * size + "\n")
        for i in range(2, 20001):
            f.write(f"{i},row {i}\n")
with open("line1g.csv", "wb") as f:
    f.write(b"id,body\n")
    chunk = b"y" * (1 << 20)
    for _ in range(1024):
        f.write(chunk)
    f.write(b"\n")
PY

printf '%-34s %-10s %-14s %-10s %-10s %-12s\n' case wall_s peak_rss_mib read written quarantined
measure() {
  local name="$1"
  /usr/bin/time -f '%e %M' -o time.txt "$bin" run j --json > report.json 2> err.txt || true
  read -r wall kib < time.txt
  python3 - "$name" "$wall" "$kib" <<'PY'
import json, sys
name, wall, kib = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    r = json.load(open("report.json"))
    rows = r["rows"]
    print(f"{name:<34} {wall:<10} {kib/1024:<14.1f} {rows['read']:<10} {rows['written']:<10} {rows['quarantined']:<12}")
except Exception as e:
    print(f"{name:<34} {wall:<10} {kib/1024:<14.1f} (no report: {open('err.txt').read().strip()[:80]})")
PY
}
project 16777216; job field64k.csv; measure "64 KiB field, 20,000 rows"
project 16777216; job field256k.csv; measure "256 KiB field, 20,000 rows"
project 16777216; job field50.csv; measure "50 MB field, limit 16 MiB"
project 67108864; job field50.csv; measure "50 MB field, limit 64 MiB"
project 16777216; job line1g.csv; measure "1 GiB single line, limit 16 MiB"

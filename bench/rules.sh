#!/usr/bin/env bash
# Rule-evaluation overhead on the main job: the flights job as shipped (model constraints and
# mapping rules) against the same job with every model constraint and mapping rule removed.
# Parse/cast/malformed rules stay in both: they are part of reading text.
#
#   bash bench/rules.sh [RUNS]        (default 5 runs of each, interleaved)
#
# Prints one row per run and the medians; overhead = with_rules / without_rules - 1.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --quiet
bin="$PWD/target/release/sluice"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for v in with without; do
  mkdir -p "$work/$v"
  cp -r sluice.toml mappings jobs samples "$work/$v/"
done
python3 - "$work/without" <<'PY'
import re, sys, pathlib
root = pathlib.Path(sys.argv[1])
m = root / "mappings/nycflights13_to_flight.toml"
text = m.read_text()
m.write_text(text[: text.index("[[rule]]")])
model = root / "mappings/canonical/flight.toml"
keep = [l for l in model.read_text().splitlines()
        if not re.match(r"\s*(required|primary_key|pattern|min|max|max_length|enum)\s*=", l)]
model.write_text("\n".join(keep) + "\n")
PY
rules() { python3 -c 'import json,sys;print(len(json.load(open(sys.argv[1]))["rules"]))' "$1"; }
printf '%-5s %-14s %-8s %-8s\n' run variant wall_s rules
declare -A walls
for i in $(seq 1 "$runs"); do
  for v in with without; do
    cd "$work/$v"
    /usr/bin/time -f '%e' -o time.txt "$bin" run flights --json > report.json || true
    wall=$(cat time.txt)
    printf '%-5s %-14s %-8s %-8s\n' "$i" "${v}_rules" "$wall" "$(rules report.json)"
    walls[$v]+="$wall "
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
w=$(median "${walls[with]}")
wo=$(median "${walls[without]}")
printf 'median with_rules %s s, without_rules %s s, overhead %s\n' "$w" "$wo" \
  "$(awk "BEGIN{printf \"%.1f%%\", ($w/$wo-1)*100}")"

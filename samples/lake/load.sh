#!/usr/bin/env bash
# Puts the nycflights13 sample files into bucket `lake` of the local S3-compatible server
# (started here if it is not running; see tools/s3/server.sh), for jobs/flights_lake.toml:
#
#   bash samples/lake/load.sh
#   LAKE_KEY_ID=test LAKE_SECRET=test cargo run --release -- run flights_lake
set -euo pipefail
cd "$(dirname "$0")/../.."
port="${SLUICE_S3_PORT:-9900}"
bash tools/s3/server.sh
s3="http://127.0.0.1:$port"
# moto answers 409 when the bucket exists already (from an earlier load): fine.
curl -s -o /dev/null -X PUT "$s3/lake"
for f in samples/nycflights13/*.csv.gz; do
  # No `Expect: 100-continue`: moto's server never answers it.
  curl -sf -o /dev/null -X PUT -H "Expect:" -H "Content-Type: application/octet-stream" --data-binary "@$f" "$s3/lake/raw/nycflights13/$(basename "$f")"
done
echo "bucket lake on $s3: raw/nycflights13/{flights,airports,airlines}.csv.gz"

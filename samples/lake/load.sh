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
# Signed requests (moto refuses unsigned reads and overwrites); it accepts any key.
sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "${LAKE_KEY_ID:-local}:${LAKE_SECRET:-local}")
# moto answers 409 when the bucket exists already (from an earlier load): fine.
curl -s -o /dev/null "${sign[@]}" -X PUT "$s3/lake"
for f in samples/nycflights13/*.csv.gz; do
  url="$s3/lake/raw/nycflights13/$(basename "$f")"
  # No `Expect: 100-continue`: moto's server never answers it.
  curl -sf -o /dev/null "${sign[@]}" -X PUT -H "Expect:" -H "Content-Type: application/octet-stream" --data-binary "@$f" "$url"
done
echo "bucket lake on $s3: raw/nycflights13/{flights,airports,airlines}.csv.gz"

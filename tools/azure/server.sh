#!/usr/bin/env bash
# Starts a local Azure Blob Storage emulator (Azurite, from the npm registry) on 127.0.0.1,
# for the tests. Idempotent: a running emulator is left alone. Blobs are kept in memory.
#
#   bash tools/azure/server.sh          # port 10000, or $SLUICE_AZURE_PORT
#
# Azurite goes into $SLUICE_AZURITE_DIR (default ~/.cache/sluice/azurite), installed with the
# machine's npm on first use (about 15 s). Its account is Azurite's well-known development
# account, `devstoreaccount1`.
set -euo pipefail
dir="${SLUICE_AZURITE_DIR:-$HOME/.cache/sluice/azurite}"
port="${SLUICE_AZURE_PORT:-10000}"
version="3.35.0"
bin="$dir/node_modules/.bin/azurite-blob"
if ! grep -qs "\"version\": \"$version\"" "$dir/node_modules/azurite/package.json"; then
  echo "== installing azurite@$version into $dir"
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund "azurite@$version")
fi
up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/devstoreaccount1?comp=list"; }
if up; then
  echo "Azurite already listening on 127.0.0.1:$port"
  exit 0
fi
log="${TMPDIR:-/tmp}/sluice-azurite-$port.log"
# setsid: the emulator outlives the shell (and the test process) that started it.
setsid "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --disableTelemetry \
  --skipApiVersionCheck >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 100); do
  if up; then
    echo "Azurite listening on 127.0.0.1:$port (log: $log)"
    exit 0
  fi
  sleep 0.1
done
echo "Azurite did not start on 127.0.0.1:$port; its log, $log:" >&2
cat "$log" >&2
exit 1

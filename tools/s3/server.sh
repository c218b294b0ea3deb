#!/usr/bin/env bash
# Starts a local S3-compatible server (moto's server mode, from PyPI) on 127.0.0.1, for the
# tests and the README's object-store example. Idempotent: a running server is left alone.
#
#   bash tools/s3/server.sh            # port 9900, or $SLUICE_S3_PORT
#
# The Python packages (moto, and the deltalake/pyarrow readers the tests check tables with) go
# into a virtual environment at $SLUICE_S3_VENV (default ~/.cache/sluice/s3venv), made on first
# use (about a minute). See docs/decisions/0010-object-stores-and-delta.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SLUICE_S3_VENV:-$HOME/.cache/sluice/s3venv}"
port="${SLUICE_S3_PORT:-9900}"
bash "$here/../venv.sh" "$venv" "$here/requirements.txt"
up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; }
if up; then
  echo "S3 server already listening on 127.0.0.1:$port"
  exit 0
fi
log="${TMPDIR:-/tmp}/sluice-s3-$port.log"
# setsid: the server outlives the shell (and the test process) that started it.
setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 100); do
  if up; then
    echo "S3 server listening on 127.0.0.1:$port (log: $log)"
    exit 0
  fi
  sleep 0.1
done
echo "the S3 server did not start on 127.0.0.1:$port; its log, $log:" >&2
cat "$log" >&2
exit 1

#!/usr/bin/env bash
# Makes (or brings up to date) a Python virtual environment from a requirements file:
#
#   bash tools/venv.sh VENV REQUIREMENTS
#
# Installs only when REQUIREMENTS differs from what VENV was made from (a copy kept as
# VENV/.requirements), so a second call costs nothing. Used by tools/s3/server.sh and
# bench/tpch/run.sh.
set -euo pipefail
venv="$1"
requirements="$2"
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  echo "== installing $(grep -v '^#' "$requirements" | xargs) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

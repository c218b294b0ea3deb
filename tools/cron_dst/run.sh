#!/usr/bin/env bash
# Runs the DST test of tokio-cron-scheduler under libfaketime (Debian package `faketime`):
# the clock starts at 2026-03-27 12:00 UTC and runs 3600 times fast, so three days pass in
# about 70 seconds. Both clocks tokio reads (wall and monotonic) are faked.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet
TZ=UTC faketime -f '@2026-03-27 12:00:00 x3600' ./target/release/cron_dst

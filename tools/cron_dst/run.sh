#!/usr/bin/env bash
# Runs the DST test of tokio-cron-scheduler under libfaketime (Debian package `faketime`):
# the clock starts ten seconds before a fire on the day before London's 2026 spring and
# autumn changes, and runs at
# normal speed (only the wall clock is faked; tokio's timers use the real monotonic clock).
# Prints the fires and a verdict per scenario; exit 1 if any is wrong.
set -uo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet || exit 2
rc=0
TZ=UTC FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f '@2026-03-28 01:59:50' ./target/release/cron_dst spring || rc=1
TZ=UTC FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f '@2026-10-24 00:59:50' ./target/release/cron_dst autumn || rc=1
exit $rc

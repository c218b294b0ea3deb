#!/usr/bin/env bash
# Soak test of `sluice schedule`: N jobs (default 50) on one-minute schedules for M minutes
# (default 10), on loopback only. Prints fires expected, fires run, runs per fire, the largest
# start delay (log line time minus fire time) and how each run ended.
#
#   bash tools/soak/run.sh [JOBS] [MINUTES]
#
# Needs a release build (`cargo build --release`). Works in a scratch copy of the project.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${1:-50}
MINUTES=${2:-10}
BIN=$PWD/target/release/sluice
WORK=$(mktemp -d /tmp/sluice-soak.XXXXXX)
cp -r sluice.toml mappings samples "$WORK/"
mkdir -p "$WORK/jobs"
for i in $(seq 1 "$JOBS"); do
  sed -e "s/table = \"carriers\"/table = \"carriers_$i\"/" jobs/carriers.toml \
    | { echo 'schedule = { cron = "* * * * *", misfire = "skip" }'; cat; } > "$WORK/jobs/soak_$i.toml"
done
cd "$WORK"
"$BIN" validate >/dev/null
START=$(date -u +%s)
SLUICE_LOG_FORMAT=json "$BIN" schedule --grace 2m 2> daemon.log &
PID=$!
sleep $((MINUTES * 60))
kill -TERM $PID
wait $PID
END=$(date -u +%s)
python3 - "$START" "$END" "$JOBS" daemon.log <<'PY'
import json, sys, collections, datetime as dt
start, end, jobs, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# Fires expected: every whole minute strictly after the daemon started (misfire = skip) and
# before SIGTERM, for every job.
first = (start // 60 + 1) * 60
minutes = [m for m in range(first, end, 60)]
expected = len(minutes) * jobs
started, finished, delays, status = collections.Counter(), 0, [], collections.Counter()
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        print("not JSON:", line.strip()); continue
    msg = e.get("message", "")
    if msg.endswith(": run starting") and "fire at " in msg:
        job = msg.split(":")[0].split()[1]
        fire_at = dt.datetime.fromisoformat(msg.split("fire at ")[1][:20].replace("Z", "+00:00"))
        logged = dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        started[(job, fire_at)] += 1
        delays.append((logged - fire_at).total_seconds())
    if " run " in msg and "rows read" in msg:
        finished += 1
        status[msg.split(" run ")[1].split()[1]] += 1
doubled = sum(1 for n in started.values() if n > 1)
print(f"jobs {jobs}, window {end - start} s, whole minutes {len(minutes)}")
print(f"fires expected {expected}, fires run {len(started)}, fires run twice {doubled}, runs finished {finished}")
print(f"start delay: max {max(delays):.3f} s, mean {sum(delays)/len(delays):.3f} s" if delays else "no fires")
print("run statuses:", dict(status))
sys.exit(0 if len(started) == expected and doubled == 0 and finished == expected else 1)
PY

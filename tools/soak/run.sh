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
SLUICE_LOG_FORMAT=json "$BIN" schedule --grace 2m 2> daemon.log &
PID=$!
sleep $((MINUTES * 60))
kill -TERM $PID
wait $PID
python3 - daemon.log .sluice/state.db "$JOBS" <<'PY'
import collections, datetime as dt, json, sqlite3, sys
log, db, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
ts = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
started, finished, status, up, down = collections.Counter(), {}, collections.Counter(), None, None
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        print("not JSON:", line.strip()); continue
    msg = e.get("message", "")
    if msg.startswith("scheduling "): up = ts(e["timestamp"])
    # Fires stop at SIGTERM: "stopping" when runs were in progress, else "stopped".
    if msg.startswith("stopping") or (msg == "stopped" and down is None): down = ts(e["timestamp"])
    if "fire at " not in msg: continue
    job = msg.split(":")[0].split()[1]
    fire = ts(msg.split("fire at ")[1][:20])
    if msg.endswith(": run starting"):
        started[(job, fire)] += 1
    elif " rows read" in msg:
        run_id, st = msg.split(": run ")[1].split()[:2]
        finished[run_id] = fire; status[st] += 1
# Fires expected: every whole minute after the daemon started, up to the SIGTERM (when it
# stopped taking fires), for every job.
first = up.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
minutes = int((down - first).total_seconds() // 60) + 1 if down >= first else 0
expected = minutes * jobs
rows = dict(sqlite3.connect(db).execute("SELECT run_id, started_at FROM runs"))
delays = [(ts(rows[r]) - f).total_seconds() for r, f in finished.items() if r in rows]
doubled = sum(1 for n in started.values() if n > 1)
print(f"jobs {jobs}; daemon up {up:%H:%M:%S} to {down:%H:%M:%S}; whole minutes {minutes}")
print(f"fires expected {expected}, fires run {len(started)}, fires run twice {doubled}, runs finished {len(finished)}")
if delays:
    delays.sort()
    print(f"run start minus fire time: max {delays[-1]:.3f} s, median {delays[len(delays)//2]:.3f} s, mean {sum(delays)/len(delays):.3f} s")
print("run statuses:", dict(status))
sys.exit(0 if len(started) == expected and doubled == 0 and len(finished) == expected else 1)
PY

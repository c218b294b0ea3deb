"""Runs the benchmark's rounds and prints the table; called by run.sh (see there).

    python3 run.py SLUICE_BINARY DATAFUSION_BINARY DATA_DIR ROUNDS
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = ["convert", "etl"]
TOOLS = ["sluice", "datafusion", "duckdb", "polars"]


def command(tool, job, bins, data, out):
    """The command line of one run, and the folder or file holding its valid rows."""
    if tool == "sluice":
        project = os.path.join(out, "project")
        if not os.path.isdir(project):
            shutil.copytree(os.path.join(HERE, "project"), project)
        shutil.rmtree(os.path.join(project, "warehouse"), ignore_errors=True)
        shutil.rmtree(os.path.join(project, ".sluice"), ignore_errors=True)
        table = "lineitem" if job == "convert" else "order_line"
        cmd = [bins["sluice"], "--project", project, "run", job, "--json"]
        return cmd, os.path.join(project, "warehouse", table)
    target = os.path.join(out, f"{tool}-{job}")
    shutil.rmtree(target, ignore_errors=True)
    if tool == "datafusion":
        cmd = [bins["datafusion"], job, data, target]
    else:
        cmd = [sys.executable, os.path.join(HERE, "peers.py"), tool, job, data, target]
    return cmd, os.path.join(target, "target.parquet")


def timed(cmd, env):
    """Runs `cmd` under GNU time; returns (wall s, cpu s, peak RSS MiB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as t:
        p = subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name, *cmd],
            env=env, capture_output=True, text=True,
        )
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        wall, user, system, kib = t.read().split()[-4:]
    return float(wall), float(user) + float(system), int(kib) / 1024, p.stdout


def fingerprint(path):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "check.py"), path],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def main(bins, data, rounds):
    env = dict(os.environ, TPCH_DIR=data)
    out = tempfile.mkdtemp(prefix="sluice-tpch-")
    results = {(t, j): [] for t in TOOLS for j in JOBS}
    stages = {j: [] for j in JOBS}
    rows = {}
    expected = {}
    print(f"{'round':<6} {'job':<8} {'tool':<10} {'wall_s':>7} {'cpu_s':>7} {'rss_mib':>8}")
    for r in range(1, rounds + 1):
        for job in JOBS:
            for tool in TOOLS:
                cmd, output = command(tool, job, bins, data, out)
                wall, cpu, rss, stdout = timed(cmd, env)
                results[(tool, job)].append((wall, cpu, rss))
                print(f"{r:<6} {job:<8} {tool:<10} {wall:>7.2f} {cpu:>7.2f} {rss:>8.0f}", flush=True)
                if tool == "sluice":
                    report = json.loads(stdout)
                    stages[job].append(report["stages"])
                    rows[job] = report["rows"]
                if r == 1:
                    got = fingerprint(output)
                    want = expected.setdefault(job, got)
                    if got != want:
                        sys.exit(f"{tool} wrote other rows than sluice for {job}:\n  {got}\n  {want}")
    shutil.rmtree(out, ignore_errors=True)
    print()
    for job in JOBS:
        n = int(expected[job].split()[0])
        print(f"{job}: {rows[job]['read']:,} rows read, {n:,} loaded, "
              f"{rows[job]['quarantined']:,} quarantined; outputs identical (row hash "
              f"{expected[job].split()[1]})")
        med = {t: [statistics.median(x[i] for x in results[(t, job)]) for i in range(3)] for t in TOOLS}
        base = med["sluice"]
        print(f"  {'tool':<10} {'wall_s':>7} {'cpu_s':>7} {'rss_mib':>8} {'rows/s':>11} {'wall/sluice':>11} {'rss/sluice':>10}")
        for t in TOOLS:
            w, c, m = med[t]
            print(f"  {t:<10} {w:>7.2f} {c:>7.2f} {m:>8.0f} {rows[job]['read'] / w:>11,.0f} "
                  f"{w / base[0]:>11.2f} {m / base[2]:>10.2f}")
        st = {k: statistics.median(s[k] for s in stages[job]) for k in stages[job][0]}
        print("  sluice stages (median ms): " + ", ".join(f"{k} {v:.0f}" for k, v in st.items()))
        print()


if __name__ == "__main__":
    main({"sluice": sys.argv[1], "datafusion": sys.argv[2]}, sys.argv[3], int(sys.argv[4]))

"""Bounded memory (issue 13, item 4): the ETL job under memory limits, one run per limit, with
its wall time, CPU time, peak RSS and what it spilled.

    python3 memory.py SLUICE_BINARY DATA_DIR LIMIT...

LIMIT is `none` or a size as `memory_limit` takes it (`1GiB`). Each run uses a fresh copy of
bench/tpch/project with `memory_limit` set in the job and `spill_dir = "spill"` (inside the
copy, so on the same disk as the data rather than a RAM-backed /tmp). Data as run.sh makes it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def project_with(limit, out):
    """A copy of the benchmark project whose ETL job has `limit`."""
    project = os.path.join(out, "project")
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(os.path.join(HERE, "project"), project)
    with open(os.path.join(project, "sluice.toml"), "a") as f:
        f.write('\n[defaults]\nspill_dir = "spill"\n')
    if limit != "none":
        job = os.path.join(project, "jobs", "etl.toml")
        text = open(job).read()
        with open(job, "w") as f:
            f.write(f'memory_limit = "{limit}"\n{text}')
    return project


def run(sluice, data, limit, out):
    """One run: (status, wall s, CPU s, peak RSS MiB, spilled MiB, spill files, rows written)."""
    project = project_with(limit, out)
    cmd = [sluice, "--project", project, "run", "etl", "--json"]
    with tempfile.NamedTemporaryFile("r") as t:
        p = subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name, *cmd],
            env=dict(os.environ, TPCH_DIR=data), capture_output=True, text=True,
        )
        wall, user, system, kib = t.read().split()[-4:]
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError:
        sys.exit(f"{' '.join(cmd)} printed no report ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    spill = report.get("spill") or {"bytes": 0, "files": 0}
    status = report["status"]
    if report.get("error"):
        status += ": " + report["error"]["message"][:80]
    return (status, float(wall), float(user) + float(system), int(kib) / 1024,
            spill["bytes"] / 2**20, spill["files"], report["rows"]["written"])


def main(sluice, data, limits):
    out = tempfile.mkdtemp(prefix="sluice-memory-", dir=HERE)
    try:
        print(f"ETL job on {data}, one run per limit")
        print("| memory_limit | status | wall s | CPU s | peak RSS MiB | spilled MiB | spill files | rows written |")
        print("|---|---|---|---|---|---|---|---|")
        for limit in limits:
            s, wall, cpu, rss, spilled, files, written = run(sluice, data, limit, out)
            print(f"| {limit} | {s} | {wall:.1f} | {cpu:.1f} | {rss:,.0f} | {spilled:,.0f} | {files} | {written:,} |", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:])

"""What a Parquet target's file settings cost and give: the `convert` job run with each
variant of `[target]` in turn (A B C ..., A B C ..., so machine noise hits all alike), and the
same rows written by DuckDB and Polars once, for their file sizes.

    python3 files.py SLUICE_BINARY DATA_DIR [ROUNDS]

DATA_DIR is what run.sh generates (bench/tpch/data/sf<SF>/). Prints, per variant: median wall
time, CPU and peak RSS, and the output's bytes, files and row groups, with the ratio of its
bytes to DuckDB's. Run it with the Python of the benchmark's virtual environment, which has
DuckDB (it reads the row groups) and Polars.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from run import timed

HERE = os.path.dirname(os.path.abspath(__file__))

# The `[target]` keys each variant adds to bench/tpch/project/jobs/convert.toml.
VARIANTS = [
    ("default (zstd 3, 131072-row groups)", ""),
    ("zstd 9", 'compression_level = 9\n'),
    ("zstd 3, 1M-row groups", 'row_group_size = 1048576\n'),
    ("snappy", 'compression = "snappy"\n'),
    ("lz4", 'compression = "lz4"\n'),
]


def layout(path):
    """(bytes, files, row groups) of a Parquet file or folder."""
    import duckdb

    files = [path] if os.path.isfile(path) else [
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")
    ]
    size = sum(os.path.getsize(f) for f in files)
    groups = duckdb.sql(
        "SELECT count(DISTINCT (file_name, row_group_id)) FROM parquet_metadata($files)",
        params={"files": files},
    ).fetchall()[0][0]
    return size, len(files), groups


def project_with(out, name, keys):
    project = os.path.join(out, name)
    shutil.copytree(os.path.join(HERE, "project"), project)
    job = os.path.join(project, "jobs", "convert.toml")
    with open(job) as f:
        text = f.read()
    with open(job, "w") as f:
        f.write(text.replace('mode = "overwrite"\n', 'mode = "overwrite"\n' + keys))
    return project


def main(sluice, data, rounds):
    env = dict(os.environ, TPCH_DIR=data)
    out = tempfile.mkdtemp(prefix="sluice-files-")
    projects = [project_with(out, f"v{i}", keys) for i, (_, keys) in enumerate(VARIANTS)]
    times = {i: [] for i in range(len(VARIANTS))}
    peers = {}
    for tool in ["duckdb", "polars"]:
        target = os.path.join(out, tool)
        subprocess.run(
            [sys.executable, os.path.join(HERE, "peers.py"), tool, "convert", data, target],
            env=env, check=True,
        )
        peers[tool] = layout(os.path.join(target, "target.parquet"))
    for r in range(rounds):
        for i, project in enumerate(projects):
            shutil.rmtree(os.path.join(project, "warehouse"), ignore_errors=True)
            shutil.rmtree(os.path.join(project, ".sluice"), ignore_errors=True)
            times[i].append(timed([sluice, "--project", project, "run", "convert"], env)[:3])
            print(f"round {r + 1} {VARIANTS[i][0]}: {times[i][-1][0]:.2f} s", flush=True)
    duck = peers["duckdb"][0]
    print()
    print(f"{'writer':<38} {'wall_s':>7} {'cpu_s':>7} {'rss_mib':>8} {'MiB':>8} {'files':>6} {'groups':>7} {'/duckdb':>8}")
    for i, (name, _) in enumerate(VARIANTS):
        wall, cpu, rss = (statistics.median(x[k] for x in times[i]) for k in range(3))
        size, files, groups = layout(os.path.join(projects[i], "warehouse", "lineitem"))
        print(f"sluice {name:<31} {wall:>7.2f} {cpu:>7.2f} {rss:>8.0f} {size / 2**20:>8.1f} {files:>6} {groups:>7} {size / duck:>8.2f}")
    for tool, (size, files, groups) in peers.items():
        print(f"{tool:<38} {'':>7} {'':>7} {'':>8} {size / 2**20:>8.1f} {files:>6} {groups:>7} {size / duck:>8.2f}")
    shutil.rmtree(out)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 3)

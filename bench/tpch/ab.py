"""Two Sluice binaries on the benchmark's jobs, interleaved (A B A B ...), to decide whether a
change stays: median wall and CPU time and peak RSS of each, their ratio, and a check that
both wrote the same rows. Data as run.sh makes it (run that once first).

    ~/.cache/sluice/tpchvenv/bin/python bench/tpch/ab.py BEFORE AFTER [SF] [ROUNDS] [JOB...]

For example, with the binary of the commit before a change copied to /tmp/sluice-before:

    bench/tpch/ab.py /tmp/sluice-before target/release/sluice 1 5 convert etl
"""

import os
import statistics
import sys
import tempfile

from run import HERE, command, fingerprint, timed


def main(before, after, sf, rounds, jobs):
    data = os.path.join(HERE, "data", f"sf{sf}")
    env = dict(os.environ, TPCH_DIR=data)
    bins = {"before": before, "after": after}
    results = {(b, j): [] for b in bins for j in jobs}
    out = {b: tempfile.mkdtemp(prefix=f"sluice-ab-{b}-") for b in bins}
    print(f"{'round':<6} {'job':<8} {'binary':<7} {'wall_s':>7} {'cpu_s':>7} {'rss_mib':>8}")
    for r in range(1, rounds + 1):
        for job in jobs:
            prints = {}
            for b, path in bins.items():
                cmd, output = command("sluice", job, {"sluice": path}, data, out[b])
                wall, cpu, rss, _ = timed(cmd, env)
                results[(b, job)].append((wall, cpu, rss))
                print(f"{r:<6} {job:<8} {b:<7} {wall:>7.2f} {cpu:>7.2f} {rss:>8.0f}", flush=True)
                if r == 1:
                    prints[b] = fingerprint(output)
            if r == 1 and prints["before"] != prints["after"]:
                sys.exit(f"{job}: the binaries wrote different rows:\n  {prints}")
    print()
    print(f"{'job':<8} {'binary':<7} {'wall_s':>7} {'cpu_s':>7} {'rss_mib':>8} {'wall/before':>11} {'cpu/before':>10}")
    for job in jobs:
        med = {b: [statistics.median(x[i] for x in results[(b, job)]) for i in range(3)] for b in bins}
        for b in bins:
            w, c, m = med[b]
            print(f"{job:<8} {b:<7} {w:>7.2f} {c:>7.2f} {m:>8.0f} "
                  f"{w / med['before'][0]:>11.2f} {c / med['before'][1]:>10.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    main(args[0], args[1], args[2] if len(args) > 2 else "1",
         int(args[3]) if len(args) > 3 else 5, args[4:] or ["convert", "etl"])

"""The fingerprint of a job's output, to check that every tool wrote the same rows:

    python3 check.py PATH      PATH: a Parquet file, or a folder of them (Sluice's tables)

Prints `<rows> <hash> <columns>`: the row count, the sum of a 64-bit hash of every row (each
value written as text, so a float where a decimal belongs, or a timestamp for a date,
changes it), and the column names with their types. Read with DuckDB, a reader none of the
tools under test wrote its output for.
"""

import os
import sys

import duckdb


def fingerprint(path):
    files = f"{path}/**/*.parquet" if os.path.isdir(path) else path
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{files}')")
    names = rel.columns
    row = " || '|' || ".join(f"coalesce(CAST(\"{n}\" AS VARCHAR), '∅')" for n in names)
    rows, digest = con.execute(
        f"SELECT count(*), coalesce(sum(hash({row})), 0) FROM read_parquet('{files}')"
    ).fetchall()[0]
    columns = ",".join(f"{n}:{t}" for n, t in zip(names, rel.types))
    return f"{rows} {digest} {columns}"


if __name__ == "__main__":
    print(fingerprint(sys.argv[1]))

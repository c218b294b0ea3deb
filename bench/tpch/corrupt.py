"""Breaks a fixed, seeded 2.5% of TPC-H lineitem rows so that each of the ETL job's four rules
has failures; one broken row in five breaks two rules.

    python3 corrupt.py lineitem.csv lineitem_dirty.csv

The rules (bench/tpch/project/mappings): quantity in 1..50; ship date <= receipt date; return
flag in {A, N, R}; order date <= ship date (orders are dated 1992-01-01 and later, so a ship
date in 1991 breaks it). Prints how many rows break each rule.
"""

import csv
import datetime
import io
import random
import sys

RULES = ["quantity", "shipped_before_received", "return_flag", "ordered_before_shipped"]
# Column positions in lineitem.csv (TPC-H order).
QUANTITY, RETURN_FLAG, SHIP, RECEIPT = 4, 8, 10, 12


def breaks(rng):
    """The rules one selected row breaks: one, or two distinct ones for one row in five."""
    if rng.random() < 0.2:
        return rng.sample(RULES, 2)
    return [rng.choice(RULES)]


def corrupt(fields, rules, rng):
    if "quantity" in rules:
        fields[QUANTITY] = rng.choice(["0", "51", "75", "99"])
    if "return_flag" in rules:
        fields[RETURN_FLAG] = "X"
    if "ordered_before_shipped" in rules:
        fields[SHIP] = "1991-%02d-%02d" % (rng.randint(1, 12), rng.randint(1, 28))
        if "shipped_before_received" not in rules:
            # Keep the other date rule passing.
            fields[RECEIPT] = max(fields[RECEIPT], fields[SHIP])
    if "shipped_before_received" in rules:
        ship = datetime.date.fromisoformat(fields[SHIP])
        fields[RECEIPT] = (ship - datetime.timedelta(days=rng.randint(1, 30))).isoformat()


def main(src, dst):
    rng = random.Random(20261130)
    counts = dict.fromkeys(RULES, 0)
    rows = broken = 0
    with open(src, newline="") as fin, open(dst, "w", newline="") as fout:
        fout.write(fin.readline())  # header
        for line in fin:
            rows += 1
            if rng.random() >= 0.025:
                fout.write(line)
                continue
            broken += 1
            fields = next(csv.reader([line]))
            rules = breaks(rng)
            corrupt(fields, rules, rng)
            for r in rules:
                counts[r] += 1
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(fields)
            fout.write(out.getvalue())
    print(f"{dst}: {broken} of {rows} rows broken ({broken / rows:.2%}); per rule: {counts}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

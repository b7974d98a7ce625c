"""Launch throughput on MariaDB versus SQLite (issue #14: mysql within 80 % of sqlite).

Usage: python bench/storage_compare.py [--instances N] [--concurrency C] [--connections K]
                                       [--level L] [--rounds R]

Runs ``bench/instances.py``'s end-to-end measurement R times on each backend, alternating
sqlite and mysql so that a burst of load from something else on the machine hits both alike,
and compares the best run of each (the least disturbed one), and each mysql run with the
sqlite run just before it. MariaDB is the server on 127.0.0.1:3306 (root, no password); each
mysql run uses a throw-away database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from instances import run  # noqa: E402

TARGET = 0.80


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rates: dict[str, list[float]] = {"sqlite": [], "mysql": []}
    for _ in range(a.rounds):
        for storage, runs in rates.items():
            runs.append(run(a.instances, a.concurrency, a.connections, a.level, storage))
    best = {storage: max(runs) for storage, runs in rates.items()}
    print(f"best of {a.rounds}: sqlite {best['sqlite']:,.0f}/s, mysql {best['mysql']:,.0f}/s")
    print(f"mysql / sqlite: {best['mysql'] / best['sqlite']:.2f} (target >= {TARGET:.2f})")
    pairs = [m / s for s, m in zip(rates["sqlite"], rates["mysql"], strict=True)]
    print("run for run (each mysql run / the sqlite run just before it): "
          + ", ".join(f"{r:.2f}" for r in pairs) + f"; median {statistics.median(pairs):.2f}")


if __name__ == "__main__":
    main()

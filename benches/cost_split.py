#!/usr/bin/env python3
"""Server against generator: CPU per RCPT of each side over the runs given, with each
pinned side's CPU time split into its own work (user + system) and packet receiving
(softirq), from the `server` and `generator` sections of each run's summary.json
(`bulkbench bench` pins the two to CPUs of their own). Prints one row per run and the
medians. Standard library only; BENCHMARKS.md section 4 says why the split matters.

    python3 benches/cost_split.py REPORT_DIR...
"""

import json
import statistics
import sys
from pathlib import Path


def row(summary):
    """Per-RCPT figures of one run, in microseconds; None when it was not pinned."""
    server, generator = summary.get("server"), summary["generator"]
    if server is None or server.get("cpu_set") is None or generator.get("cpu_set") is None:
        return None
    rcpts = summary["totals"]["rcpts"]
    if rcpts == 0:
        return None

    def per_rcpt(seconds):
        return seconds * 1e6 / rcpts

    def split(side):
        s = side["cpu_set"]
        return {
            "busy": s["busy_us_per_rcpt"],
            "own": per_rcpt(s["user_seconds"] + s["system_seconds"]),
            "softirq": per_rcpt(s["softirq_seconds"] + s["irq_seconds"]),
        }

    srv, gen = split(server), split(generator)
    return {
        "process": generator["cpu_us_per_rcpt"] / server["cpu_us_per_rcpt"],
        "cpus": gen["busy"] / srv["busy"],
        "own": gen["own"] / srv["own"],
        "server": srv,
        "generator": gen,
        "rcpt_per_sec": summary["throughput"]["rcpt_per_sec"],
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = []
    print(f"{'run':<44} {'RCPT/s':>8}  {'server µs/RCPT':>22}  {'generator µs/RCPT':>22}  "
          f"{'gen/server':>26}")
    print(f"{'':<44} {'':>8}  {'busy  own  softirq':>22}  {'busy  own  softirq':>22}  "
          f"{'process  CPUs  user+sys':>26}")
    for arg in sys.argv[1:]:
        path = Path(arg) / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            sys.exit(f"{path}: {err}")
        r = row(summary)
        if r is None:
            print(f"{arg:<44} not pinned, or no RCPT: skipped")
            continue
        rows.append(r)
        s, g = r["server"], r["generator"]
        print(f"{Path(arg).name:<44} {r['rcpt_per_sec']:>8.0f}  "
              f"{s['busy']:>7.2f} {s['own']:>5.2f} {s['softirq']:>7.2f}  "
              f"{g['busy']:>7.2f} {g['own']:>5.2f} {g['softirq']:>7.2f}  "
              f"{r['process']:>8.2f} {r['cpus']:>5.2f} {r['own']:>9.2f}")
    if rows:
        def med(key):
            return statistics.median(r[key] for r in rows)

        print(f"median of {len(rows)} runs: generator/server {med('process'):.2f} by process CPU, "
              f"{med('cpus'):.2f} by busy time of the pinned CPUs, {med('own'):.2f} by user + system "
              f"(packet receiving left out)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prints the median of every `rcpt_path`/`rcpt_lookup`/`simulate_ratio` function of the last
criterion run, in nanoseconds per RCPT (elements per iteration from criterion's
benchmark.json), and the ratios the benches are judged by. Standard library only.

    python3 benches/criterion_medians.py [TARGET_DIR]   # default: target/
"""

import json
import sys
from pathlib import Path

RCPTS = 10_000
# The groups of benches/benches/rcpt_path.rs.
GROUPS = ("rcpt_path", "rcpt_lookup", "simulate_ratio")


def main():
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "target"
    medians = {}
    for estimates in sorted((target / "criterion").glob("*/*/new/estimates.json")):
        group, function = estimates.parts[-4], estimates.parts[-3]
        if group not in GROUPS:
            continue
        # Elements per iteration: what criterion was told (10,000 RCPTs for most).
        benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
        elements = (benchmark.get("throughput") or {}).get("Elements", RCPTS)
        medians[f"{group}/{function}"] = json.loads(estimates.read_text())["median"]["point_estimate"] / elements
    if not medians:
        sys.exit(f"no criterion results under {target}/criterion; run `cargo bench -p bulkbench-benches --bench rcpt_path`")
    for name, ns in medians.items():
        print(f"{name:42} {ns:8.1f} ns/RCPT")
    for a, b in (
        ("rcpt_path/full_path", "rcpt_path/bare_hashmap_lookup"),
        ("rcpt_path/full_path", "rcpt_path/bare_std_hashmap_lookup"),
        ("rcpt_path/parse_only", "rcpt_path/smtp_proto_parse"),
        ("simulate_ratio/simulate_quick", "simulate_ratio/hot_path"),
    ):
        x, y = medians.get(a), medians.get(b)
        if x and y:
            print(f"{a.split('/')[1]} / {b.split('/')[1]} = {x / y:.2f}")


if __name__ == "__main__":
    main()

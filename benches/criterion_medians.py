#!/usr/bin/env python3
"""Prints the median of every `rcpt_path`/`rcpt_lookup` function of the last criterion run,
in nanoseconds per RCPT (10,000 RCPTs per iteration), and the two ratios the benches are
judged by. Standard library only.

    python3 benches/criterion_medians.py [TARGET_DIR]   # default: target/
"""

import json
import sys
from pathlib import Path

RCPTS = 10_000


def main():
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "target"
    medians = {}
    for estimates in sorted((target / "criterion").glob("rcpt_*/*/new/estimates.json")):
        name = f"{estimates.parts[-4]}/{estimates.parts[-3]}"
        medians[name] = json.loads(estimates.read_text())["median"]["point_estimate"] / RCPTS
    if not medians:
        sys.exit(f"no criterion results under {target}/criterion; run `cargo bench -p bulkbench-benches`")
    for name, ns in medians.items():
        print(f"{name:42} {ns:8.1f} ns/RCPT")
    for a, b in (
        ("full_path", "bare_hashmap_lookup"),
        ("full_path", "bare_std_hashmap_lookup"),
        ("parse_only", "smtp_proto_parse"),
    ):
        x, y = medians.get(f"rcpt_path/{a}"), medians.get(f"rcpt_path/{b}")
        if x and y:
            print(f"{a} / {b} = {x / y:.2f}")


if __name__ == "__main__":
    main()

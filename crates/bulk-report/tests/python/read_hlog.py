"""Reads an HdrHistogram interval log with the independent reader of PyPI's `hdrhistogram`
package (HdrHistogram_py) and prints, as JSON: the total count, interval count and largest
value per tag; the log's StartTime as that reader sees it, and the earliest interval start
it computes (absolute, in seconds since the epoch); and the log format version the header
states (the reader skips that line, as HdrHistogram's Java reader does; read here).

Usage: read_hlog.py FILE.hlog
"""

import json
import re
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader


def main():
    reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3_600_000_000, 3))
    totals = {}
    intervals = {}
    maxima = {}
    first_start = None
    while True:
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            break
        tag = histogram.get_tag()
        totals[tag] = totals.get(tag, 0) + histogram.get_total_count()
        intervals[tag] = intervals.get(tag, 0) + 1
        maxima[tag] = max(maxima.get(tag, 0), histogram.get_max_value())
        start = histogram.get_start_time_stamp() / 1000.0
        first_start = start if first_start is None else min(first_start, start)
    start_time = reader.get_start_time_sec()
    reader.close()
    version = None
    with open(sys.argv[1], encoding="utf-8") as log:
        for line in log:
            match = re.match(r"#\[Histogram log format version ([\d.]+)\]", line)
            if match:
                version = match.group(1)
                break
    print(
        json.dumps(
            {
                "totals": totals,
                "intervals": intervals,
                "max": maxima,
                "start_time_sec": start_time,
                "first_interval_start_sec": first_start,
                "version": version,
            }
        )
    )


if __name__ == "__main__":
    main()

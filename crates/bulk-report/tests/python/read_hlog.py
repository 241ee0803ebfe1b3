"""Reads an HdrHistogram interval log with the independent reader of PyPI's `hdrhistogram`
package (HdrHistogram_py) and prints, as JSON, the total count and interval count per tag.

Usage: read_hlog.py FILE.hlog
"""

import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader


def main():
    reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3_600_000_000, 3))
    totals = {}
    intervals = {}
    maxima = {}
    while True:
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            break
        tag = histogram.get_tag()
        totals[tag] = totals.get(tag, 0) + histogram.get_total_count()
        intervals[tag] = intervals.get(tag, 0) + 1
        maxima[tag] = max(maxima.get(tag, 0), histogram.get_max_value())
    reader.close()
    print(json.dumps({"totals": totals, "intervals": intervals, "max": maxima}))


if __name__ == "__main__":
    main()

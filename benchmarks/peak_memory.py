"""The resident-set high-water mark, for the benchmarks that report CPU peak memory
(train_throughput.py, paper_scale.py, many_classes.py)."""
from __future__ import annotations

import resource


def peak_rss_kib() -> int:
    """The resident-set high-water mark of this process image, in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

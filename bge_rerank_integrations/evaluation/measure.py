"""Time and memory figures of a configuration: latency percentiles, pairs per second, peak resident memory."""

from __future__ import annotations

import logging
import math
import re
import resource
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` (0-100) percentile of ``values``, interpolated linearly between ranks (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.5, 3.85)
    """
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * share / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 12)


def latency(seconds: Sequence[float], pairs: int) -> dict[str, float | None]:
    """``{"p50_ms", "p95_ms", "pairs_per_s"}`` of per-query scoring times ``seconds`` for ``pairs`` pairs in all."""
    total = sum(seconds)
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p95_ms": round(percentile(seconds, 95) * 1000, 3),
        "pairs_per_s": round(pairs / total, 2) if total > 0 else None,
    }


def reset_peak_rss() -> bool:
    """Restart the peak resident memory count at the current size (Linux); False where it cannot."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The peak resident memory of this process in MB (MiB).

    On Linux since the last ``reset_peak_rss``, elsewhere since the process started.
    """
    try:
        with open(_STATUS, encoding="ascii") as handle:
            found = re.search(r"^VmHWM:\s+(\d+) kB", handle.read(), re.MULTILINE)
        if found:
            return round(int(found.group(1)) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
